"""What an archive declares about its model's inputs: model-config.yaml's ``optimize_inputs``.

``launchkit optimize`` reads this declaration, and only this, to make inputs, calibrate static
int8 and measure accuracy, so a user's archive gets what a bundled example gets::

    optimize_inputs:
      kind: image                 # tensor (default), image (calibration folders are photos) or text
      shape: [3, 224, 224]        # one row, without the batch dimension (tensor and image)
      tokenizer: tokenizer.json   # text: a Hugging Face `tokenizers` file in the archive
      samples: sentences.txt      # text: lines the measured inputs are drawn from
      calibration: calibration.pt # real inputs for static int8 (a tensor or a tuple of them, batch first)
      held_out: held_out.pt       # {"inputs": tensor(s), "labels": tensor}: measured on, labels scored
      task: classifier            # the accuracy measure: classifier (top-1), embedding (cosine) or auto

Files are named relative to the archive's root. Pure: nothing is opened here but the names are
checked against the extracted archive when a folder is given.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from launchkit.core.errors import ArchiveError

DECLARATION_KEY = "optimize_inputs"


class InputKind(StrEnum):
    TENSOR = "tensor"
    IMAGE = "image"
    TEXT = "text"


class AccuracyTask(StrEnum):
    AUTO = "auto"  # told apart by the outputs: unit-norm rows are embeddings, the rest classifiers
    CLASSIFIER = "classifier"
    EMBEDDING = "embedding"


@dataclass(frozen=True)
class InputDeclaration:
    kind: InputKind = InputKind.TENSOR
    shape: tuple[int, ...] | None = None
    tokenizer: str | None = None
    samples: str | None = None
    calibration: str | None = None
    held_out: str | None = None
    task: AccuracyTask = AccuracyTask.AUTO

    def files(self) -> dict[str, str]:
        """The archive files the declaration names, by key."""
        named = {"tokenizer": self.tokenizer, "samples": self.samples, "calibration": self.calibration,
                 "held_out": self.held_out}
        return {key: name for key, name in named.items() if name is not None}


KEYS = tuple(field.name for field in fields(InputDeclaration))


def read_declaration(config: dict[str, Any], where: str, model_dir: Path | None = None) -> InputDeclaration:
    """The ``optimize_inputs`` of a model-config (``where`` names the archive in errors); empty when absent."""
    raw = config.get(DECLARATION_KEY)
    if raw is None:
        return InputDeclaration()
    prefix = f"{where}: model-config.yaml's {DECLARATION_KEY}"
    if not isinstance(raw, dict):
        raise ArchiveError(f"{prefix} must be a mapping of {', '.join(KEYS)}; got {raw!r}")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ArchiveError(f"{prefix} has unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(KEYS)}")
    kind = _choice(raw.get("kind", InputKind.TENSOR), InputKind, f"{prefix}.kind")
    task = _choice(raw.get("task", AccuracyTask.AUTO), AccuracyTask, f"{prefix}.task")
    names = {key: _file_name(raw[key], f"{prefix}.{key}") for key in ("tokenizer", "samples", "calibration",
                                                                       "held_out") if raw.get(key) is not None}
    declaration = InputDeclaration(kind=kind, shape=_shape(raw.get("shape"), f"{prefix}.shape"), task=task, **names)
    if kind is InputKind.TEXT and (declaration.tokenizer is None or declaration.samples is None):
        raise ArchiveError(f"{prefix}: kind text needs tokenizer (a tokenizers .json) and samples (a text file of "
                           "lines) in the archive")
    if kind is not InputKind.TEXT and (declaration.tokenizer or declaration.samples):
        raise ArchiveError(f"{prefix}: tokenizer and samples are for kind text; this declaration is kind {kind}")
    if model_dir is not None:
        for key, name in declaration.files().items():
            if not (model_dir / name).is_file():
                raise ArchiveError(f"{prefix}.{key} names {name}, which the archive does not hold; add it as an "
                                   "extra file (torch-model-archiver --extra-files) or remove the key")
    return declaration


def _choice(value: Any, kinds: type[StrEnum], where: str) -> Any:
    try:
        return kinds(value)
    except ValueError:
        raise ArchiveError(f"{where} is {value!r}; expected one of {', '.join(kinds)}") from None


def _shape(value: Any, where: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    if (not isinstance(value, list) or not value
            or not all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in value)):
        raise ArchiveError(f"{where} is {value!r}; expected a list of positive sizes without the batch dimension, "
                           "such as [3, 224, 224]")
    return tuple(value)


def _file_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or value.startswith("/") or ".." in Path(value).parts:
        raise ArchiveError(f"{where} is {value!r}; expected a file name inside the archive, such as held_out.pt")
    return value
