"""The bundled example models: tiny (an MLP), resnet18 and minilm (all-MiniLM-L6-v2, real weights),
with their TorchServe-style handlers, ``build`` (makes their archives) and ``cache`` (builds them
once, in a child process). The models import torch; ``cache`` does not, so the CLI can use it."""

# The bundled examples, one home: every command that takes --example or an example's name reads it here.
EXAMPLES = ("tiny", "resnet18", "minilm", "mnist")
