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

from launchkit.archive.inputs import AccuracyTask
from launchkit.core.errors import LaunchkitError, UsageError
from launchkit.core.results import writable_file
from launchkit.model.spec import OptimizationSpec
from launchkit.optimize.sources import Source, archive_of, load_source


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
    task: AccuracyTask = AccuracyTask.AUTO
    min_top1: float = 0.99
    min_cosine: float = 0.999
    force: bool = False
    output: str | None = None
    threads: int | None = None
    calibration: str | None = None  # images folder, text lines, or saved tensors (.pt)
    calibration_samples: int = 256


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


def run_optimize(request: OptimizeRequest, progress: Callable[[str], None] = lambda message: None) -> OptimizeResult:
    import torch

    from launchkit.model.transform import optimize_model
    from launchkit.optimize.calibration import calibration_batches
    from launchkit.optimize.measure import agreement, compare_throughput, label_accuracy

    if request.threads:
        torch.set_num_threads(request.threads)
    with tempfile.TemporaryDirectory(prefix="launchkit-optimize-") as scratch:
        source = load_source(archive_of(request.target, request.example), Path(scratch), request.inputs_file,
                             request.input_shape)
        output = output_path(request, source)
        largest = max(request.batch_sizes)
        original = optimize_model(source.load(), OptimizationSpec())  # the fp32 model as it is
        if request.spec.dtype == "int8" and original.is_script:  # before calibrating and measuring what cannot be made
            raise UsageError(f"{source.name} is a TorchScript model, and int8 quantizes an eager one (a model file and "
                             "its weights): archive the eager model, or optimize this one with --dtype bf16")
        calibration = calibration_batches(request, source, largest, progress)
        optimized = optimize_model(source.load(), request.spec, lambda: source.make_inputs(largest, 1), calibration)
        result = OptimizeResult(source.name, request.spec.to_dict(), optimized.description, str(request.task),
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
        task = request.task if request.task is not AccuracyTask.AUTO else source.task
        if task is AccuracyTask.AUTO:
            sample = original(*source.make_inputs(2, 4))
            sample = sample[0] if isinstance(sample, (tuple, list)) else sample
            rows = sample.float().reshape(2, -1)
            normalised = bool(torch.allclose(rows.norm(dim=1), torch.ones(2), atol=1e-3))
            task = AccuracyTask.EMBEDDING if normalised or rows.shape[1] == 1 else AccuracyTask.CLASSIFIER
        result.task = str(task)
        result.accepted, result.reason = _gate(request, task, measured)
        if result.accepted and result.slower:
            result.reason = ("slower than the original at every batch size measured (in every interleaved round, "
                             "more than 5% at the median)")
        if output is not None and ((result.accepted and not result.slower) or request.force):
            result.artifact = str(write_artifact(request, source, optimized, output))
    return result


def _gate(request: OptimizeRequest, task: AccuracyTask, measured: Any) -> tuple[bool, str]:
    if task is AccuracyTask.CLASSIFIER and measured.top1_agreement < request.min_top1:
        return False, (f"top-1 agreement with the fp32 original is {measured.top1_agreement:.2%}, below "
                       f"--min-top1-agreement {request.min_top1:.2%}")
    if task is AccuracyTask.EMBEDDING and measured.min_cosine < request.min_cosine:
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
    if request.spec.dtype == "int8" and request.spec.int8 == "static" and request.spec.graph != "torchscript":
        raise UsageError("a static int8 artifact ships the quantized graph: add --graph torchscript")
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
        if optimized.traced is None:
            raise LaunchkitError(f"tracing the int8 model failed, so there is no graph to ship: {optimized.description}")
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
