"""The program of the start-up benchmark: it only imports torch, like every real workload."""

import torch  # noqa: F401
