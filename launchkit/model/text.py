"""Text inputs for a model an archive declares as ``kind: text``: lines tokenized with the archive's
own `tokenizers` file, padded to the longest and truncated as a BERT-style handler does.

The bundled minilm example has the same few lines in its model file on purpose: that file ships
alone in its archive and also runs under TorchServe, where launchkit is not importable.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

MAX_TOKENS = 256


def encode_lines(tokenizer_file: Path, lines: list[str], max_tokens: int = MAX_TOKENS) -> tuple[Any, Any]:
    """(input_ids, attention_mask) for ``lines``, as long tensors of one padded length."""
    import torch
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_truncation(max_tokens)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encodings = tokenizer.encode_batch(lines)
    return (torch.tensor([e.ids for e in encodings], dtype=torch.long),
            torch.tensor([e.attention_mask for e in encodings], dtype=torch.long))


def drawn_lines(samples: list[str], count: int, seed: int) -> list[str]:
    """``count`` texts of one to three of ``samples`` each, drawn with ``seed``: inputs of varied lengths."""
    chooser = random.Random(seed)
    return [" ".join(chooser.sample(samples, min(len(samples), chooser.randint(1, 3)))) for _ in range(count)]
