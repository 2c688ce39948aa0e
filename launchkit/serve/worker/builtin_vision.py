"""TorchServe's default vision handlers, without torchvision: ``image_classifier``,
``image_segmenter``, ``object_detector`` and their base ``VisionHandler``.

Same inputs as TorchServe's (per request: image bytes, a base64 string of them, or a nested list of
numbers already in tensor form) and the same outputs:

* image_classifier: the top 5 as ``{label: probability}`` (labels from ``index_to_name.json``,
  else the class index as a string);
* image_segmenter: ``[H][W][2]`` per image, ``[class index, probability]`` of each pixel's best class;
* object_detector: ``[{label: [x1, y1, x2, y2], "score": s}, ...]`` for detections scoring at
  least ``threshold`` (0.5).

The transforms are torchvision's, written with PIL and torch: the shorter side resized to 256
(bilinear; the longer side truncated, as torchvision does), a centre crop of 224, scaled to
[0, 1], normalised with the ImageNet mean and standard deviation. Images are converted to RGB
first (TorchServe would fail on a grayscale or RGBA image with a 3-channel model).

Every request of a batch runs in one model call (the detector's images may differ in size: the
model gets a list of tensors, the form torchvision's detection models take).
"""

from __future__ import annotations

import base64
import io
from typing import Any

import torch

from launchkit.serve.worker.handler_api import BaseHandler, map_class_to_label

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def open_image(payload: bytes | bytearray) -> Any:
    from PIL import Image

    image = Image.open(io.BytesIO(bytes(payload)))
    return image.convert("RGB") if image.mode != "RGB" else image


def resize_shorter(image: Any, size: int) -> Any:
    """torchvision's Resize(size) on a PIL image: the shorter side becomes ``size``."""
    from PIL import Image

    width, height = image.size
    if width <= height:
        new = (size, int(size * height / width))
    else:
        new = (int(size * width / height), size)
    return image if new == (width, height) else image.resize(new, Image.BILINEAR)


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


class VisionHandler(BaseHandler):
    """Images in, one model call per batch. Subclasses set the transform in :meth:`image_processing`."""

    def image_processing(self, image: Any) -> torch.Tensor:
        return normalize(to_tensor(center_crop(resize_shorter(image, 256), 224)))

    def decode(self, row: dict[str, Any]) -> torch.Tensor:
        value = row.get("data") or row.get("body")
        if isinstance(value, str):
            value = base64.b64decode(value)
        if isinstance(value, (bytes, bytearray)):
            return self.image_processing(open_image(value))
        return torch.as_tensor(value, dtype=torch.float32)

    def preprocess(self, data: list[dict[str, Any]]) -> Any:
        return torch.stack([self.decode(row) for row in data])


class ImageClassifier(VisionHandler):
    topk = 5

    def set_max_result_classes(self, topk: int) -> None:
        self.topk = topk

    def get_max_result_classes(self) -> int:
        return self.topk

    def postprocess(self, data: torch.Tensor) -> list[Any]:
        probabilities = torch.softmax(data, dim=1)
        values, classes = torch.topk(probabilities, min(self.topk, probabilities.shape[1]), dim=1)
        return map_class_to_label(values.tolist(), self.mapping, classes.tolist())


class ImageSegmenter(VisionHandler):
    def postprocess(self, data: Any) -> list[Any]:
        scores = data["out"] if isinstance(data, dict) else data  # torchvision's models answer {"out": ...}
        best = torch.softmax(scores, dim=1).max(dim=1)
        return torch.stack([best.indices.to(best.values.dtype), best.values], dim=3).tolist()


class ObjectDetector(VisionHandler):
    threshold = 0.5

    def image_processing(self, image: Any) -> torch.Tensor:
        return to_tensor(image)

    def preprocess(self, data: list[dict[str, Any]]) -> Any:
        return [self.decode(row) for row in data]

    def postprocess(self, data: list[dict[str, torch.Tensor]]) -> list[Any]:
        results = []
        for detections in data:
            keep = detections["scores"] >= self.threshold
            boxes, labels, scores = (detections[key][keep].tolist() for key in ("boxes", "labels", "scores"))
            results.append([{**map_class_to_label([[box]], self.mapping, [[label]])[0], "score": score}
                            for box, label, score in zip(boxes, labels, scores)])
        return results
