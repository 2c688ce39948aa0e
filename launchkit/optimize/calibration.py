"""Calibration inputs for static int8: real ones from ``--calibration``, or the model's own.

``--calibration`` takes a folder of images (for image models: decoded and preprocessed as the
image classifier handler does), a text file of lines (for text models: tokenised as the handler
does), or a saved tensor (``.pt``, a tensor or a tuple of them, batch first). Without it, the
calibration inputs the archive declares are used, else the model's example inputs drawn with a
seed the accuracy inputs never use: accuracy is always measured on held-out inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from launchkit.archive.inputs import InputKind
from launchkit.core.errors import UsageError
from launchkit.optimize.sources import Source, saved_tensors

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
CALIBRATION_SEED = 11  # the accuracy inputs use seed 3, throughput 2, tracing 1


def calibration_batches(request: Any, source: Source, batch: int,
                        progress: Callable[[str], None]) -> Callable[[], list[tuple[Any, ...]]] | None:
    """A callable giving the calibration batches, or None when the spec is not static int8."""
    spec = request.spec
    if spec.dtype != "int8" or spec.int8 != "static":
        return None
    count = request.calibration_samples
    if request.calibration:
        inputs = _from_path(Path(request.calibration), source, count)
        what = f"{inputs[0].shape[0]} inputs from {request.calibration}"
    elif source.calibration is not None:
        inputs = source.calibration(count)
        what = f"{inputs[0].shape[0]} of the model's calibration inputs"
    else:
        inputs = source.make_inputs(count, CALIBRATION_SEED)
        what = f"{count} example inputs (give --calibration for real ones)"
    progress(f"calibrating static int8 on {what}")
    total = inputs[0].shape[0]
    return lambda: [tuple(t[start:start + batch] for t in inputs) for start in range(0, total, batch)]


def _from_path(path: Path, source: Source, count: int) -> tuple[Any, ...]:
    import torch

    if not path.exists():
        raise UsageError(f"--calibration {path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
        if not files:
            raise UsageError(f"--calibration {path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the folder")
        if source.kind is not InputKind.IMAGE:
            raise UsageError(f"--calibration {path}: a folder of images, but {source.name} does not take images; "
                             "give a .pt of input tensors (or, if it does, declare optimize_inputs: kind: image in "
                             "its model-config.yaml)")
        from launchkit.model.images import classifier_tensor

        return (torch.stack([classifier_tensor(file.read_bytes()) for file in files]),)
    if path.suffix == ".pt":
        tensors = saved_tensors(torch.load(str(path), map_location="cpu", weights_only=True), f"--calibration {path}")
        return tuple(t[:count] for t in tensors)
    if source.kind is InputKind.TEXT and source.tokenizer is not None:
        from launchkit.model.text import encode_lines

        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()][:count]
        if not lines:
            raise UsageError(f"--calibration {path}: no text lines")
        return encode_lines(source.tokenizer, lines)
    raise UsageError(f"--calibration {path}: expected a folder of images, a text file (text models) or a .pt")
