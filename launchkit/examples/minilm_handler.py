"""Handler of the `minilm` example: sentences in, L2-normalised 384-d embeddings out (batched).

Input per request: text (one sentence), or JSON: a string, a list of strings, or {"text": ...} /
{"inputs": [...]}. Output: one embedding (a list of 384 floats) for a single sentence, a list of
them for a list. Every sentence of every request in a batch is tokenized and encoded together.
"""

import os

import torch
from ts.torch_handler.base_handler import BaseHandler

from minilm import SENTENCES, encode, tokenizer


class MiniLMHandler(BaseHandler):
    def initialize(self, context):
        # the tokenizer first: BaseHandler builds the optimized graph from example_inputs()
        self.tokenizer = tokenizer(os.path.join(context.system_properties["model_dir"], "tokenizer.json"))
        super().initialize(context)

    def example_inputs(self, batch_size):
        return encode(self.tokenizer, [SENTENCES[i % len(SENTENCES)] for i in range(batch_size)])

    def preprocess(self, data):
        # Each example handler is self-contained (it ships alone in its archive and also runs
        # under TorchServe), so the small input-unwrapping loop is repeated in each on purpose.
        texts, self.shapes, self.errors = [], [], {}
        for index, row in enumerate(data):
            value = row.get("data", row.get("body"))
            if isinstance(value, (bytes, bytearray)):
                value = bytes(value).decode("utf-8", errors="replace")
            if isinstance(value, dict):
                value = value.get("text", value.get("inputs"))
            if isinstance(value, str):
                texts.append(value)
                self.shapes.append(None)
            elif isinstance(value, list) and value and all(isinstance(item, str) for item in value):
                texts.extend(value)
                self.shapes.append(len(value))
            else:
                self.errors[index] = "expected text, or JSON: a string, a list of strings, or {\"text\": ...}"
                self.shapes.append(0)
        return encode(self.tokenizer, texts or [""])

    def inference(self, data, *args, **kwargs):
        with torch.inference_mode():
            return self.model(*data)

    def postprocess(self, data):
        rows = data.tolist()
        outputs, position = [], 0
        for index, shape in enumerate(self.shapes):
            if index in self.errors:
                self.context.set_response_status(400, "Bad Request", index)
                outputs.append({"code": 400, "type": "BadRequestException", "message": self.errors[index]})
            elif shape is None:
                outputs.append(rows[position])
                position += 1
            else:
                outputs.append(rows[position:position + shape])
                position += shape
        return outputs
