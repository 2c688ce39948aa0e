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
first by the default transforms (TorchServe would fail on a grayscale or RGBA image with a 3-channel
model); a subclass that sets its own ``image_processing`` (TorchServe's mnist example: ToTensor and a
one-channel Normalize) gets the image in its own mode, as under TorchServe.

Every request of a batch runs in one model call (the detector's images may differ in size: the
model gets a list of tensors, the form torchvision's detection models take).
"""

from __future__ import annotations

import base64
from typing import Any

import torch

from launchkit.model.images import center_crop, normalize, open_image, resize_shorter, to_tensor
from launchkit.serve.worker.handler_api import BaseHandler, map_class_to_label

class VisionHandler(BaseHandler):
    """Images in, one model call per batch. Subclasses set the transform in :meth:`image_processing`."""

    def image_processing(self, image: Any) -> torch.Tensor:
        if image.mode != "RGB":
            image = image.convert("RGB")
        return normalize(to_tensor(center_crop(resize_shorter(image, 256), 224)))

    def decode(self, row: dict[str, Any]) -> torch.Tensor:
        value = row.get("data") or row.get("body")
        if isinstance(value, str):
            value = base64.b64decode(value)
        if isinstance(value, (bytes, bytearray)):
            return self.image_processing(open_image(value, rgb=False))
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
        return to_tensor(image if image.mode == "RGB" else image.convert("RGB"))

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
