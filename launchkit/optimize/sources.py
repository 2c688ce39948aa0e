"""The model `launchkit optimize` works on, and its inputs, as its archive declares them.

Every archive is read the same way, a bundled example's as a user's: model-config.yaml's
``optimize_inputs`` (launchkit/archive/inputs.py) says what the inputs are (a shape, images or
text), which real inputs calibrate static int8, which held-out inputs the measurements use and
whether they carry labels. ``--inputs`` and ``--input-shape`` override the declaration; a
TorchScript ``.pt`` has none, so it needs one of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from launchkit.archive.inputs import AccuracyTask, InputDeclaration, InputKind, read_declaration
from launchkit.core.errors import ArchiveError, UsageError
from launchkit.examples import EXAMPLES
from launchkit.examples.targets import archive_named, example_choices

MakeInputs = Callable[[int, int], tuple[Any, ...]]  # (count, seed) → input tensors, batch first


@dataclass(frozen=True)
class Source:
    """A model to optimize: how to load a fresh copy, and how to make inputs for it."""

    name: str
    load: Callable[[], Any]
    make_inputs: MakeInputs
    archive: Path | None = None  # None: a TorchScript .pt (nothing to archive again)
    model_dir: Path | None = None  # the extracted archive
    declaration: InputDeclaration = field(default_factory=InputDeclaration)
    # real inputs for static int8's calibration: (count) → tensors; None: drawn by make_inputs
    calibration: Callable[[int], tuple[Any, ...]] | None = None
    # a labelled held-out set (inputs, labels): label accuracy is reported beside agreement
    labelled: Callable[[], tuple[tuple[Any, ...], Any]] | None = None

    @property
    def kind(self) -> InputKind:
        return self.declaration.kind

    @property
    def task(self) -> AccuracyTask:
        return self.declaration.task

    @property
    def tokenizer(self) -> Path | None:
        name = self.declaration.tokenizer
        return self.model_dir / name if name and self.model_dir else None


def archive_of(target: str | None, example: str | None) -> Path:
    """The file optimize starts from: a bundled example (--example or its name), a .mar or a TorchScript .pt."""
    if not target and not example:
        raise UsageError(f"give a MODEL (.mar or .pt) or --example {'|'.join(EXAMPLES)}")
    return archive_named(example or target, f"a .mar, a TorchScript .pt, or a bundled example ({example_choices()})")


def load_source(archive: Path, workdir: Path, inputs_file: str | None = None,
                input_shape: tuple[int, ...] | None = None) -> Source:
    """The model in ``archive`` with its inputs; ``inputs_file`` and ``input_shape`` override the archive's."""
    import torch

    if archive.suffix == ".pt":  # TorchScript declares nothing: the user says what its inputs are
        return Source(archive.stem, lambda: torch.jit.load(str(archive), map_location="cpu").eval(),
                      _given(inputs_file, input_shape) or _random(None, archive.name))
    from launchkit.archive.manifest import read_manifest
    from launchkit.archive.reading import extract_archive, read_model_config
    from launchkit.model.loading import load_archived_model

    model_dir = extract_archive(archive, workdir / "model")
    manifest = read_manifest(model_dir)
    declaration = read_declaration(read_model_config(model_dir, manifest), archive.name, model_dir)
    held_out = _held_out(model_dir, declaration, archive.name) if declaration.held_out else None
    # what the user gives first, then the declared real inputs, then drawn ones
    make_inputs = _given(inputs_file, input_shape)
    if make_inputs is None and held_out is not None:
        make_inputs = _repeating(held_out[0])
    elif make_inputs is None and declaration.kind is InputKind.TEXT:
        make_inputs = _text_maker(model_dir, declaration)
    elif make_inputs is None:
        make_inputs = _random(declaration.shape, archive.name)
    calibration = None
    if declaration.calibration:
        saved = torch.load(str(model_dir / declaration.calibration), map_location="cpu", weights_only=True)
        tensors = saved_tensors(saved, f"{archive.name}: {declaration.calibration} (optimize_inputs.calibration)")
        calibration = lambda count: tuple(t[:count] for t in tensors)  # noqa: E731
    labelled = None
    if held_out is not None and held_out[1] is not None:
        inputs, labels = held_out
        labelled = lambda: (inputs, labels)  # noqa: E731
    return Source(manifest.model_name, lambda: load_archived_model(model_dir, manifest), make_inputs, archive,
                  model_dir, declaration, calibration, labelled)


def _given(inputs_file: str | None, input_shape: tuple[int, ...] | None) -> MakeInputs | None:
    """Inputs from --inputs (real ones) or --input-shape (random); None when neither was given."""
    import torch

    if inputs_file:
        return _repeating(saved_tensors(torch.load(inputs_file, map_location="cpu", weights_only=True), inputs_file))
    return _random(input_shape, "") if input_shape else None


def _random(shape: tuple[int, ...] | None, what: str) -> MakeInputs:
    """Random normal inputs of ``shape`` (one row's), drawn with the seed asked for."""
    import torch

    if shape is None:
        raise UsageError(_no_inputs(what))

    def random_normal(count: int, seed: int) -> tuple[Any, ...]:
        generator = torch.Generator().manual_seed(seed)
        return (torch.randn(count, *shape, generator=generator),)

    return random_normal


def _no_inputs(what: str) -> str:
    return (f"{what}: launchkit cannot tell this model's input shape; give --input-shape C,H,W (without the batch "
            "dimension) or --inputs FILE.pt (a saved tensor of real inputs), or declare them in the archive's "
            "model-config.yaml (optimize_inputs: shape: [C, H, W]; docs/optimize.md)")


def _repeating(tensors: tuple[Any, ...]) -> MakeInputs:
    """The same real inputs every time, repeated to ``count`` rows (the seed plays no part)."""

    def repeated(count: int, seed: int) -> tuple[Any, ...]:
        repeats = -(-count // tensors[0].shape[0])
        return tuple(t.repeat(repeats, *[1] * (t.dim() - 1))[:count] for t in tensors)

    return repeated


def _text_maker(model_dir: Path, declaration: InputDeclaration) -> MakeInputs:
    from launchkit.model.text import drawn_lines, encode_lines

    assert declaration.samples and declaration.tokenizer  # read_declaration requires both for text
    samples = [line.strip() for line in (model_dir / declaration.samples).read_text().splitlines() if line.strip()]
    if not samples:
        raise ArchiveError(f"{declaration.samples} (optimize_inputs.samples) holds no lines of text")
    tokenizer = model_dir / declaration.tokenizer
    return lambda count, seed: encode_lines(tokenizer, drawn_lines(samples, count, seed))


def saved_tensors(loaded: Any, what: str) -> tuple[Any, ...]:
    """A saved tensor, or a tuple or list of them (one per model input), each batch first."""
    import torch

    tensors = tuple(loaded) if isinstance(loaded, (tuple, list)) else (loaded,)
    if not tensors or not all(isinstance(t, torch.Tensor) and t.dim() >= 1 and t.shape[0] > 0 for t in tensors):
        raise UsageError(f"{what}: expected a tensor, or a tuple of tensors, batch first and not empty")
    if any(t.shape[0] != tensors[0].shape[0] for t in tensors):
        raise UsageError(f"{what}: its tensors hold different numbers of rows ({[t.shape[0] for t in tensors]})")
    return tensors


def _held_out(model_dir: Path, declaration: InputDeclaration, where: str) -> tuple[tuple[Any, ...], Any]:
    """(inputs, labels or None) of the declared held-out file: {"inputs": tensor(s), "labels": tensor}."""
    import torch

    assert declaration.held_out is not None
    what = f"{where}: {declaration.held_out} (optimize_inputs.held_out)"
    loaded = torch.load(str(model_dir / declaration.held_out), map_location="cpu", weights_only=True)
    if not isinstance(loaded, dict) or "inputs" not in loaded:
        raise ArchiveError(f"{what}: expected a dict {{'inputs': tensor(s), 'labels': tensor}} saved with torch.save")
    inputs = saved_tensors(loaded["inputs"], what)
    labels = loaded.get("labels")
    if labels is not None and (not isinstance(labels, torch.Tensor) or labels.shape[:1] != inputs[0].shape[:1]):
        raise ArchiveError(f"{what}: 'labels' must be a tensor with one label per input row "
                           f"({inputs[0].shape[0]} rows)")
    return inputs, labels
