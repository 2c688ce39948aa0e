"""launchkit: fast, measurable PyTorch inference on CPUs."""

__version__ = "0.1.0"
