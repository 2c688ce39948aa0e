"""Handler of the `mnist` example (TorchServe-compatible: runs under TorchServe too).

Input per request: a digit image (PNG/JPEG, made grayscale and 28×28), raw float32 bytes of a
1×28×28 tensor (values in [0, 1]), or JSON (a nested list or {"data": ...}). Output: the digit, as
TorchServe's mnist example answers.
"""

import io

import torch

from ts.torch_handler.base_handler import BaseHandler

IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")


class DigitHandler(BaseHandler):
    example_input_shape = (1, 28, 28)

    def _image(self, payload):
        from PIL import Image

        image = Image.open(io.BytesIO(payload)).convert("L").resize((28, 28))
        return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(1, 28, 28).float() / 255.0

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
                    tensor = torch.frombuffer(bytearray(value), dtype=torch.float32).view(1, 28, 28)
                else:
                    tensor = torch.as_tensor(value, dtype=torch.float32).view(1, 28, 28)
            except Exception as error:  # PIL raises many types for broken images
                self.errors[index] = f"cannot read the input: {error}"
                tensor = torch.zeros(1, 28, 28)
            rows.append(tensor)
        return torch.stack(rows)

    def postprocess(self, data):
        outputs = data.argmax(dim=1).tolist()
        for index, message in self.errors.items():
            self.context.set_response_status(400, "Bad Request", index)
            outputs[index] = {"code": 400, "type": "BadRequestException", "message": message}
        return outputs
