"""Image preprocessing as torchvision does it, with PIL and torch (there is no CPU torchvision wheel):
the default vision handlers and `launchkit optimize`'s calibration images both use it."""

from __future__ import annotations

import io
from typing import Any

import torch

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def open_image(payload: bytes | bytearray, rgb: bool = True) -> Any:
    """An image file as PIL reads it; made RGB unless ``rgb`` is false (then in its own mode)."""
    from PIL import Image

    image = Image.open(io.BytesIO(bytes(payload)))
    return image.convert("RGB") if rgb and image.mode != "RGB" else image


def resize_shorter(image: Any, size: int) -> Any:
    """torchvision's Resize(size) on a PIL image: the shorter side becomes ``size``."""
    from PIL import Image

    width, height = image.size
    if width <= height:
        new = (size, int(size * height / width))
    else:
        new = (int(size * width / height), size)
    return image if new == (width, height) else image.resize(new, Image.Resampling.BILINEAR)


def center_crop(image: Any, size: int) -> Any:
    width, height = image.size
    left, top = int(round((width - size) / 2.0)), int(round((height - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def to_tensor(image: Any) -> torch.Tensor:
    """HWC uint8 RGB → CHW float in [0, 1] (torchvision's ToTensor)."""
    width, height = image.size
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(height, width, 3)
    return pixels.permute(2, 0, 1).float().div_(255.0)


def normalize(tensor: torch.Tensor, mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD) -> torch.Tensor:
    return (tensor - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)


def classifier_tensor(payload: bytes | bytearray) -> torch.Tensor:
    """An image file as ImageNet classifiers take it: shorter side 256, centre crop 224, normalised."""
    return normalize(to_tensor(center_crop(resize_shorter(open_image(payload), 256), 224)))
