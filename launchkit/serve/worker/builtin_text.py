"""TorchServe's default ``text_classifier`` handler (and its base ``TextHandler``), without torchtext,
batched: TorchServe's reads only the first request of a batch; this one classifies every request
of the batch in one model call.

Per request: text (str, bytes, or base64-free JSON string). The text is cleaned as TorchServe
cleans it (HTML tags and entities removed, lower-cased, contractions expanded, accents and
punctuation removed), tokenised like torchtext's ``basic_english``, extended with its bigrams, and
looked up in the archive's vocabulary. The model is called as an EmbeddingBag model is,
``model(token_ids, offsets)``, with one offset per request. Output per request:
``{label: probability}`` for every class (labels from ``index_to_name.json``).

The vocabulary is ``source_vocab.pt`` as TorchServe names it, holding a ``{token: index}`` dict or
a list of tokens (a torchtext ``Vocab`` cannot be read without torchtext: save
``vocab.get_stoi()`` instead), or ``vocab.json``/``vocab.txt`` (one token per line). Unknown tokens
map to ``<unk>`` when the vocabulary has it, else to 0.
"""

from __future__ import annotations

import json
import os
import re
import string
import unicodedata
from typing import Any

import torch

from launchkit.serve.worker.handler_api import BaseHandler, map_class_to_label

MARKUP = re.compile(r"<.*?>|&([a-z0-9]+|#[0-9]{1,6}|#x[0-9a-f]{1,6});")
# Contractions, expanded by rule rather than by a table of every word.
IRREGULAR = {"can't": "cannot", "won't": "will not", "shan't": "shall not", "ain't": "is not", "let's": "let us",
             "y'all": "you all", "'cause": "because", "o'clock": "of the clock"}
SUFFIXES = (("n't", " not"), ("'re", " are"), ("'ll", " will"), ("'ve", " have"), ("'d", " would"), ("'m", " am"),
            ("'s", " is"))
CONTRACTION = re.compile(r"[a-z]*'[a-z]+", re.IGNORECASE)
# torchtext's basic_english: spaces around punctuation it keeps, quotes and <br /> dropped.
BASIC_ENGLISH = [(re.compile(pattern), replacement) for pattern, replacement in (
    (r"\'", " '  "), (r"\"", ""), (r"\.", " . "), (r"<br \/>", " "), (r",", " , "), (r"\(", " ( "), (r"\)", " ) "),
    (r"\!", " ! "), (r"\?", " ? "), (r"\;", " "), (r"\:", " "), (r"\s+", " "))]


def expand_contractions(text: str) -> str:
    def expand(match: re.Match[str]) -> str:
        word = match.group(0)
        lower = word.lower()
        if lower in IRREGULAR:
            return word[0] + IRREGULAR[lower][1:]
        for suffix, replacement in SUFFIXES:
            if lower.endswith(suffix) and len(word) > len(suffix):
                return word[: -len(suffix)] + replacement
        return word

    return CONTRACTION.sub(expand, text).replace("'", "")


def basic_english(text: str) -> list[str]:
    text = text.lower()
    for pattern, replacement in BASIC_ENGLISH:
        text = pattern.sub(replacement, text)
    return text.split()


def with_ngrams(tokens: list[str], n: int) -> list[str]:
    grams = list(tokens)
    for size in range(2, n + 1):
        grams += [" ".join(tokens[i:i + size]) for i in range(len(tokens) - size + 1)]
    return grams


def load_vocabulary(model_dir: str) -> dict[str, int]:
    for name in ("source_vocab.pt", "vocab.json", "vocab.txt"):
        path = os.path.join(model_dir, name)
        if not os.path.isfile(path):
            continue
        if name.endswith(".pt"):
            try:
                vocab = torch.load(path, weights_only=False)
            except (ModuleNotFoundError, AttributeError) as error:
                raise RuntimeError(f"{name} needs {error}: a torchtext Vocab cannot be read without torchtext; "
                                   "save vocab.get_stoi() (a dict) in source_vocab.pt instead") from None
        elif name.endswith(".json"):
            vocab = json.load(open(path))
        else:
            vocab = open(path).read().splitlines()
        if isinstance(vocab, list):
            vocab = {token: index for index, token in enumerate(vocab)}
        if hasattr(vocab, "get_stoi"):
            vocab = vocab.get_stoi()
        if not isinstance(vocab, dict):
            raise RuntimeError(f"{name} holds a {type(vocab).__name__}; expected a {{token: index}} dict or a list")
        return vocab
    raise RuntimeError("the archive has no vocabulary: add source_vocab.pt ({token: index}), vocab.json or "
                       "vocab.txt with --extra-files")


class TextHandler(BaseHandler):
    def initialize(self, context: Any) -> None:
        super().initialize(context)
        model_dir = context.system_properties["model_dir"]
        self.source_vocab = load_vocabulary(model_dir)
        self.unknown = self.source_vocab.get("<unk>", 0)

    def _remove_html_tags(self, text: str) -> str:
        return MARKUP.sub("", text)

    def _expand_contractions(self, text: str) -> str:
        return expand_contractions(text)

    def _remove_accented_characters(self, text: str) -> str:
        return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")

    def _remove_punctuation(self, text: str) -> str:
        return text.translate(str.maketrans("", "", string.punctuation))

    def _tokenize(self, text: str) -> list[str]:
        return basic_english(text)

    def clean(self, text: str) -> list[str]:
        text = self._remove_html_tags(text).lower()
        text = self._remove_punctuation(self._remove_accented_characters(self._expand_contractions(text)))
        return self._tokenize(text)


class TextClassifier(TextHandler):
    ngrams = 2

    def preprocess(self, data: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        ids: list[int] = []
        offsets = []
        for row in data:
            text = row.get("data") or row.get("body") or ""
            if isinstance(text, (bytes, bytearray)):
                text = bytes(text).decode("utf-8", errors="replace")
            offsets.append(len(ids))
            ids += [self.source_vocab.get(token, self.unknown) for token in with_ngrams(self.clean(str(text)),
                                                                                        self.ngrams)]
        return torch.as_tensor(ids, dtype=torch.long), torch.as_tensor(offsets, dtype=torch.long)

    def inference(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        ids, offsets = data
        return super().inference(ids, offsets)

    def postprocess(self, data: torch.Tensor) -> list[Any]:
        return map_class_to_label(torch.softmax(data, dim=1).tolist(), self.mapping)
