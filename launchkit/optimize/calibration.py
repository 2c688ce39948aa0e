"""Calibration inputs for static int8: real ones from ``--calibration``, or the model's own.

``--calibration`` takes a folder of images (for image models: decoded and preprocessed as the
image classifier handler does), a text file of lines (for text models: tokenised as the handler
does), or a saved tensor (``.pt``, a tensor or a tuple of them, batch first). Without it, the
model's example inputs are used (the bundled examples declare theirs), drawn with a seed the
accuracy inputs never use: accuracy is always measured on held-out inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from launchkit.core.errors import UsageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
CALIBRATION_SEED = 11  # the accuracy inputs use seed 3, throughput 2, tracing 1


def calibration_batches(request: Any, source: Any, batch: int,
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


def _from_path(path: Path, source: Any, count: int) -> tuple[Any, ...]:
    import torch

    if not path.exists():
        raise UsageError(f"--calibration {path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
        if not files:
            raise UsageError(f"--calibration {path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the folder")
        if source.preprocess != "image":
            raise UsageError(f"--calibration {path}: a folder of images, but {source.name} does not take images; "
                             "give a .pt of input tensors")
        from launchkit.model.images import classifier_tensor

        return (torch.stack([classifier_tensor(file.read_bytes()) for file in files]),)
    if path.suffix == ".pt":
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
        tensors = tuple(loaded) if isinstance(loaded, (tuple, list)) else (loaded,)
        return tuple(t[:count] for t in tensors)
    if source.preprocess == "text":
        from launchkit.examples.minilm import encode_lines

        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()][:count]
        if not lines:
            raise UsageError(f"--calibration {path}: no text lines")
        return encode_lines(source.tokenizer, lines)
    raise UsageError(f"--calibration {path}: expected a folder of images, a text file (text models) or a .pt")


def mnist_source(source: Any) -> None:
    """The mnist example: real digits; calibration from the training digits, accuracy on held-out ones."""
    from launchkit.examples.mnist import load_digits, split

    digits = load_digits()
    train_images, _ = split(*digits, held_out=False)
    test_images, test_labels = split(*digits, held_out=True)

    def make_inputs(count: int, seed: int) -> tuple[Any, ...]:
        # held-out digits for everything measured (repeated to ``count`` if need be)
        repeats = -(-count // len(test_images))
        return (test_images.repeat(repeats, 1, 1, 1)[:count],)

    source.make_inputs = make_inputs
    source.calibration = lambda count: (train_images[:count],)
    source.labelled = lambda: ((test_images,), test_labels)
    source.task = "classifier"
