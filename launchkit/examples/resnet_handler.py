"""Handler of the `resnet18` example (TorchServe-compatible).

Input per request: a JPEG/PNG image (resized to 256, center-cropped to 224, normalized with the
ImageNet mean/std, like TorchServe's image_classifier), raw float32 bytes of a 3×224×224 tensor,
or JSON (a nested list or {"data": ...}). Output: the top-5 classes with probabilities, as
TorchServe's image_classifier returns them: {"label": probability, ...}.
"""

import io
import json
import os

import torch
from ts.torch_handler.base_handler import BaseHandler

SIZE = 224
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")


class ResNetHandler(BaseHandler):
    topk = 5
    example_input_shape = (3, SIZE, SIZE)  # lets launchkit trace an optimized graph at load time

    def initialize(self, context):
        super().initialize(context)
        mapping = os.path.join(context.system_properties["model_dir"], "index_to_name.json")
        self.labels = json.load(open(mapping)) if os.path.exists(mapping) else {}

    def _image(self, payload):
        from PIL import Image

        image = Image.open(io.BytesIO(payload)).convert("RGB")
        width, height = image.size
        scale = 256 / min(width, height)
        image = image.resize((max(SIZE, round(width * scale)), max(SIZE, round(height * scale))), Image.BILINEAR)
        width, height = image.size
        left, top = (width - SIZE) // 2, (height - SIZE) // 2
        image = image.crop((left, top, left + SIZE, top + SIZE))
        tensor = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(SIZE, SIZE, 3)
        tensor = tensor.permute(2, 0, 1).float() / 255.0
        return (tensor - MEAN) / STD

    def preprocess(self, data):
        # Each example handler is self-contained (it ships alone in its archive and also runs
        # under TorchServe), so the small input-unwrapping loop is repeated in each on purpose.
        rows, self.errors = [], {}
        for index, row in enumerate(data):
            value = row.get("data", row.get("body"))
            if isinstance(value, dict):
                value = value.get("data", value.get("inputs"))
            try:
                if isinstance(value, (bytes, bytearray)) and bytes(value[:8]).startswith(IMAGE_MAGIC):
                    tensor = self._image(bytes(value))
                elif isinstance(value, (bytes, bytearray)):
                    if len(value) != 3 * SIZE * SIZE * 4:
                        raise ValueError(f"expected a JPEG/PNG image or {3 * SIZE * SIZE * 4} bytes of float32")
                    tensor = torch.frombuffer(bytearray(value), dtype=torch.float32).view(3, SIZE, SIZE)
                else:
                    tensor = torch.as_tensor(value, dtype=torch.float32).view(3, SIZE, SIZE)
            except Exception as error:  # PIL raises many types for broken images
                self.errors[index] = f"cannot read the input: {error}"
                tensor = torch.zeros(3, SIZE, SIZE)
            rows.append(tensor)
        return torch.stack(rows)

    def postprocess(self, data):
        probabilities = torch.softmax(data, dim=1)
        values, indices = probabilities.topk(self.topk, dim=1)
        outputs = []
        for index, (row_values, row_indices) in enumerate(zip(values.tolist(), indices.tolist())):
            if index in self.errors:
                self.context.set_response_status(400, "Bad Request", index)
                outputs.append({"code": 400, "type": "BadRequestException", "message": self.errors[index]})
                continue
            outputs.append({self.labels.get(str(i), f"class_{i}"): round(p, 6) for i, p in zip(row_indices, row_values)})
        return outputs
