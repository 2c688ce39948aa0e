"""Handler of the `tiny` example (TorchServe-compatible: runs under TorchServe too).

Input per request: raw float32 bytes (64 values, little-endian) or JSON — a list of 64 numbers
or {"data": [...]}. Output: the 10 logits as a JSON list. An item of the wrong size gets its own
400; its batch-mates are still answered.
"""

import torch
from ts.torch_handler.base_handler import BaseHandler

INPUTS = 64


class TinyHandler(BaseHandler):
    def preprocess(self, data):
        # Each example handler is self-contained (it ships alone in its archive and also runs
        # under TorchServe), so the small input-unwrapping loop is repeated in each on purpose.
        rows, self.errors = [], {}
        for index, row in enumerate(data):
            value = row.get("data", row.get("body"))
            if isinstance(value, dict):
                value = value.get("data", value.get("inputs"))
            try:
                if isinstance(value, (bytes, bytearray)):
                    if len(value) != INPUTS * 4:
                        raise ValueError(f"expected {INPUTS * 4} bytes of float32, got {len(value)}")
                    tensor = torch.frombuffer(bytearray(value), dtype=torch.float32)
                else:
                    tensor = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
                    if tensor.numel() != INPUTS:
                        raise ValueError(f"expected {INPUTS} numbers, got {tensor.numel()}")
            except (TypeError, ValueError, RuntimeError) as error:
                self.errors[index] = str(error)
                tensor = torch.zeros(INPUTS)
            rows.append(tensor)
        return torch.stack(rows)

    def postprocess(self, data):
        outputs = data.tolist()
        for index, message in self.errors.items():
            self.context.set_response_status(400, "Bad Request", index)
            outputs[index] = {"code": 400, "type": "BadRequestException", "message": message}
        return outputs
