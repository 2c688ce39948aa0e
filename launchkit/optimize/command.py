"""`launchkit optimize`: optimize a model, measure it against the original, gate on accuracy, write it.

The artifact is either a new ``.mar`` (the original archive with ``optimization:`` in its
model-config.yaml, so workers rebuild the optimized graph at load: portable across machines and
torch versions) or a ``.pt`` (the traced, frozen TorchScript itself; ``graph=torchscript`` only).
Nothing is written when the optimized model disagrees with the fp32 original beyond the
thresholds, unless ``--force``.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from launchkit.core.errors import LaunchkitError, UsageError
from launchkit.core.results import writable_file
from launchkit.examples import EXAMPLES
from launchkit.model.spec import OptimizationSpec

EXAMPLE_SHAPES = {"tiny": (64,), "resnet18": (3, 224, 224)}


@dataclass(frozen=True)
class OptimizeRequest:
    spec: OptimizationSpec
    target: str | None = None
    example: str | None = None
    batch_sizes: tuple[int, ...] = (1, 8)
    input_shape: tuple[int, ...] | None = None
    inputs_file: str | None = None
    samples: int = 512
    seconds: float = 3.0
    task: str = "auto"
    min_top1: float = 0.99
    min_cosine: float = 0.999
    force: bool = False
    output: str | None = None
    threads: int | None = None
    calibration: str | None = None  # images folder, text lines, or saved tensors (.pt)
    calibration_samples: int = 256


@dataclass
class Source:
    """A model to optimize: how to load a fresh copy, and how to make inputs for it."""

    name: str
    load: Callable[[], Any]
    make_inputs: Callable[[int, int], tuple[Any, ...]]  # (count, seed) → input tensors
    archive: Path | None = None
    task: str = "auto"
    # real inputs for static int8's calibration: (count) → batches; None: the model's own example inputs
    calibration: Callable[[int], list[tuple[Any, ...]]] | None = None
    # a labelled held-out set (inputs, labels): label accuracy is reported beside agreement
    labelled: Callable[[], tuple[tuple[Any, ...], Any]] | None = None
    preprocess: str = "tensor"  # how calibration files become inputs: "image", "text" or "tensor"


@dataclass
class OptimizeResult:
    name: str
    spec: dict[str, Any]
    path: str
    task: str
    throughput: list[dict[str, Any]] = field(default_factory=list)
    agreement: dict[str, Any] = field(default_factory=dict)
    accepted: bool = False
    reason: str = ""
    labels: dict[str, Any] = field(default_factory=dict)  # label accuracy, fp32 and optimized, when known
    slower: bool = False  # measurably slower than the original (every round, and > 5% at the median)
    output: str | None = None  # where the artifact goes (None: measure only)
    artifact: str | None = None  # what was written
    threads: int = 0


def load_source(request: OptimizeRequest, workdir: Path) -> Source:
    import torch

    if request.example:
        from launchkit.examples.cache import ensure_examples

        archive = ensure_examples((request.example,))[0]
    elif request.target:
        archive = Path(request.target[len("file://"):] if request.target.startswith("file://") else request.target)
        if not archive.exists():
            raise UsageError(f"{archive}: no such file; give a .mar, a TorchScript .pt, or --example NAME")
    else:
        raise UsageError(f"give a MODEL (.mar or .pt) or --example {'|'.join(EXAMPLES)}")
    if archive.suffix == ".pt":
        shape = request.input_shape
        return Source(archive.stem, lambda: torch.jit.load(str(archive), map_location="cpu").eval(),
                      _input_maker(request, shape, archive.name), archive=None)
    from launchkit.archive.manifest import read_manifest
    from launchkit.archive.reading import extract_archive, read_model_config
    from launchkit.model.loading import load_archived_model

    model_dir = extract_archive(archive, workdir / "model")
    manifest = read_manifest(model_dir)
    config = read_model_config(model_dir, manifest)
    inputs = config.get("optimize_inputs") or {}
    source = Source(manifest.model_name, lambda: load_archived_model(model_dir, manifest), None, archive)  # type: ignore[arg-type]
    if inputs.get("kind") == "text":
        from launchkit.examples.minilm import text_inputs

        tokenizer = model_dir / inputs.get("tokenizer", "tokenizer.json")
        source.make_inputs = lambda count, seed: text_inputs(tokenizer, count, seed)
        source.task, source.preprocess = "embedding", "text"
        source.tokenizer = tokenizer  # type: ignore[attr-defined]
    elif inputs.get("kind") == "mnist":
        from launchkit.optimize.calibration import mnist_source

        mnist_source(source)
    else:
        shape = request.input_shape or (tuple(inputs["shape"]) if "shape" in inputs else
                                         EXAMPLE_SHAPES.get(manifest.model_name))
        source.make_inputs = _input_maker(request, shape, archive.name)
        source.preprocess = "image" if inputs.get("kind") == "image" or manifest.model_name == "resnet18" else "tensor"
    return source


def _input_maker(request: OptimizeRequest, shape: tuple[int, ...] | None, what: str) -> Callable[[int, int], tuple[Any, ...]]:
    import torch

    if request.inputs_file:
        loaded = torch.load(request.inputs_file, map_location="cpu", weights_only=True)
        tensors = tuple(loaded) if isinstance(loaded, (tuple, list)) else (loaded,)

        def from_file(count: int, seed: int) -> tuple[Any, ...]:
            repeats = -(-count // tensors[0].shape[0])
            return tuple(t.repeat(repeats, *[1] * (t.dim() - 1))[:count] for t in tensors)

        return from_file
    if shape is None:
        raise UsageError(f"{what}: launchkit cannot tell this model's input shape; give --input-shape C,H,W (without "
                         "the batch dimension) or --inputs FILE.pt (a saved tensor of real inputs)")

    def random_normal(count: int, seed: int) -> tuple[Any, ...]:
        generator = torch.Generator().manual_seed(seed)
        return (torch.randn(count, *shape, generator=generator),)

    return random_normal


def run_optimize(request: OptimizeRequest, progress: Callable[[str], None] = lambda message: None) -> OptimizeResult:
    import torch

    from launchkit.model.transform import optimize_model
    from launchkit.optimize.calibration import calibration_batches
    from launchkit.optimize.measure import agreement, compare_throughput, label_accuracy

    if request.threads:
        torch.set_num_threads(request.threads)
    with tempfile.TemporaryDirectory(prefix="launchkit-optimize-") as scratch:
        source = load_source(request, Path(scratch))
        output = output_path(request, source)
        largest = max(request.batch_sizes)
        original = optimize_model(source.load(), OptimizationSpec())  # the fp32 model as it is
        calibration = calibration_batches(request, source, largest, progress)
        optimized = optimize_model(source.load(), request.spec, lambda: source.make_inputs(largest, 1), calibration)
        result = OptimizeResult(source.name, request.spec.to_dict(), optimized.description, request.task,
                                output=str(output) if output else None, threads=torch.get_num_threads())
        comparisons = []
        for batch in request.batch_sizes:
            progress(f"throughput at batch {batch} ({request.seconds:g} s each, interleaved)")
            comparison = compare_throughput(original, optimized, source.make_inputs(batch, 2), request.seconds)
            comparisons.append(comparison)
            result.throughput.append({"batch_size": batch,
                                      "original": round(statistics.median(comparison.original), 2),
                                      "optimized": round(statistics.median(comparison.optimized), 2),
                                      "speedup": round(comparison.speedup, 3), "unit": "samples/s"})
        result.slower = all(comparison.slower_beyond_noise for comparison in comparisons)
        progress(f"agreement with the fp32 original on {request.samples} held-out inputs")
        measured = agreement(original, optimized, source.make_inputs(request.samples, 3), largest)
        result.agreement = asdict(measured)
        if source.labelled is not None:
            result.labels = label_accuracy(original, optimized, *source.labelled(), largest)
        task = request.task if request.task != "auto" else source.task
        if task == "auto":
            sample = original(*source.make_inputs(2, 4))
            sample = sample[0] if isinstance(sample, (tuple, list)) else sample
            rows = sample.float().reshape(2, -1)
            normalised = bool(torch.allclose(rows.norm(dim=1), torch.ones(2), atol=1e-3))
            task = "embedding" if normalised or rows.shape[1] == 1 else "classifier"
        result.task = task
        result.accepted, result.reason = _gate(request, task, measured)
        if result.accepted and result.slower:
            result.reason = ("slower than the original at every batch size measured (in every interleaved round, "
                             "more than 5% at the median)")
        if output is not None and ((result.accepted and not result.slower) or request.force):
            result.artifact = str(write_artifact(request, source, optimized, output))
    return result


def _gate(request: OptimizeRequest, task: str, measured: Any) -> tuple[bool, str]:
    if task == "classifier" and measured.top1_agreement < request.min_top1:
        return False, (f"top-1 agreement with the fp32 original is {measured.top1_agreement:.2%}, below "
                       f"--min-top1-agreement {request.min_top1:.2%}")
    if task == "embedding" and measured.min_cosine < request.min_cosine:
        return False, (f"the least cosine similarity to the fp32 original is {measured.min_cosine:.5f}, below "
                       f"--min-cosine {request.min_cosine}")
    return True, "within the accuracy thresholds"


def default_output(request: OptimizeRequest, source_name: str, is_pt: bool) -> Path:
    spec = request.spec
    tag = spec.dtype + ("-cl" if spec.channels_last else "") + ("" if spec.graph == "none" else f"-{spec.graph}")
    return Path(f"{source_name}-{tag}{'.pt' if is_pt else '.mar'}")


def output_path(request: OptimizeRequest, source: Source) -> Path | None:
    """Where the artifact goes (None: measure only); checked before anything is measured."""
    if source.archive is None:  # a TorchScript .pt: it cannot be traced again, nor archived from here
        if request.output:
            raise UsageError("a TorchScript model cannot be traced again, so there is no artifact to write: launchkit "
                             "optimize measures it (drop --output), or give an eager model in a .mar")
        return None
    from_archive = source.archive.suffix == ".mar"
    wants_pt = (request.output or "").endswith(".pt") or (not from_archive and not request.output)
    if wants_pt and request.spec.graph != "torchscript":
        raise UsageError("a .pt artifact is the traced graph: use --graph torchscript, or write a .mar")
    if not wants_pt and not from_archive:
        raise UsageError("a .mar artifact needs a .mar (or --example) to start from; write a .pt instead (-o NAME.pt)")
    path = Path(request.output) if request.output else default_output(request, source.name, wants_pt)
    return writable_file(path, "--output")


def write_artifact(request: OptimizeRequest, source: Source, optimized: Any, output: Path) -> Path:
    if output.suffix == ".pt":
        if optimized.traced is None:
            raise LaunchkitError(f"tracing failed, so there is no graph to write: {optimized.description}")
        optimized.traced.save(str(output))
        return output
    from launchkit.archive.writing import copy_with_config

    assert source.archive is not None
    spec = request.spec
    if spec.dtype == "int8" and spec.int8 == "static":
        # calibration happened here, on inputs the workers will not have: ship the quantized graph itself
        if optimized.traced is None or spec.graph != "torchscript":
            raise UsageError("a static int8 archive ships the quantized graph: add --graph torchscript")
        with tempfile.TemporaryDirectory(prefix="launchkit-int8-") as scratch:
            graph = Path(scratch) / f"{source.name}-int8.pt"
            optimized.traced.save(str(graph))
            return copy_with_config(source.archive, output, {"optimization": None,
                                                             "quantized": "static int8, TorchScript (launchkit "
                                                                          "optimize)"}, serialized=graph)
    return copy_with_config(source.archive, output, {"optimization": {"dtype": spec.dtype,
                                                                      "channels_last": spec.channels_last,
                                                                      "graph": spec.graph,
                                                                      **({"int8": spec.int8} if spec.dtype == "int8"
                                                                         else {})}})


def write_report(result: OptimizeResult, folder: Path, argv: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    summary = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": argv, **asdict(result)}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"# launchkit optimize: {result.name}", "", f"Path: {result.path} ({result.threads} threads)", "",
             "| batch | original samples/s | optimized samples/s | speed-up |", "|---|---|---|---|"]
    lines += [f"| {row['batch_size']} | {row['original']} | {row['optimized']} | {row['speedup']}× |"
              for row in result.throughput]
    a = result.agreement
    lines += ["", f"Agreement with fp32 on {a['samples']} inputs ({result.task}): top-1 {a['top1_agreement']:.2%}, "
              f"cosine min {a['min_cosine']} / mean {a['mean_cosine']}, max |diff| {a['max_abs_diff']:.3g}.", "",
              f"Verdict: {'refused' if not result.accepted or result.slower else 'accepted'}: {result.reason}."]
    if result.artifact:
        lines.append(f"Artifact: {result.artifact}")
    (folder / "report.md").write_text("\n".join(lines) + "\n")
