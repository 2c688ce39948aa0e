"""Bundled example models (plain torch.nn; imported only by worker processes, never by the CLI)."""
