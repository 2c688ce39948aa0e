"""`launchkit optimize`: flags in, one call to launchkit.optimize.command, a table and a verdict out."""

from __future__ import annotations

import sys
from typing import Any

import click

from launchkit.archive.inputs import AccuracyTask
from launchkit.cli.options import CONTEXT, option
from launchkit.core.errors import AccuracyRefused, NotFaster, UsageError
from launchkit.examples import EXAMPLES


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected integers separated by commas, e.g. 1,8") from None
    if not values or any(value < 1 for value in values):
        raise UsageError(f"{flag} {text!r}: expected positive integers")
    return values


def _dtype(asked: str) -> str:
    """``auto``: bf16 where native, else NotFaster (exit 5) naming what is native; an explicit dtype
    this CPU emulates is measured (the measurement refuses it if it is slower), with a note."""
    from launchkit.core.isa import emulated_note, read_isa

    dtype = "bf16" if asked == "auto" else asked
    note = emulated_note(dtype, read_isa())
    if note and asked == "auto":
        raise NotFaster(f"not tried: {note}. Choose --dtype int8 (calibrated, checked for accuracy) or fp32 "
                        "with --graph torchscript, or ask for --dtype bf16 to measure it anyway.")
    if note:
        click.echo(f"launchkit optimize: note: {note}; measuring it as asked", err=True)
    return dtype


@click.command(context_settings=CONTEXT)
@click.argument("model", required=False, metavar="[MODEL.mar|MODEL.pt]")
@option("--example", type=click.Choice(EXAMPLES), help="A bundled example instead of MODEL.")
@option("--dtype", type=click.Choice(["auto", "fp32", "bf16", "int8"]), default="auto", show_default=True,
        help="auto: bf16 where this CPU runs it natively (AMX or AVX512-BF16), else refused (exit 5) with what is "
             "native here; bf16: autocast, measured even where emulated; int8: static calibrated quantization "
             "(see --int8).")
@option("--channels-last/--no-channels-last", default=True, show_default=True,
        help="Convert 4-D weights and inputs to channels-last (convolutions; harmless elsewhere).")
@option("--graph", type=click.Choice(["torchscript", "compile", "none"]), default="torchscript", show_default=True,
        help="torchscript: trace (under autocast for bf16) and freeze; compile: torch.compile (needs a C++ compiler).")
@option("--int8", "int8_mode", type=click.Choice(["static", "dynamic"]), default="static", show_default=True,
        help="With --dtype int8: static (calibrated; convolutions and Linear, per-channel weights) or dynamic "
             "(Linear layers only, no calibration).")
@option("--calibration", metavar="DIR|FILE", help="Real inputs for static int8's calibration: a folder of images, "
        "a text file of lines (text models) or a saved tensor (.pt). Default: the model's example inputs.")
@option("--calibration-samples", type=click.IntRange(min=1), default=256, show_default=True,
        help="How many calibration inputs to use.")
@option("--batch-sizes", default="1,8", show_default=True, metavar="N,N", help="Batch sizes to measure throughput at.")
@option("--input-shape", metavar="C,H,W", help="One input's shape without the batch dimension (random inputs).")
@option("--inputs", "inputs_file", metavar="FILE.pt", help="Real inputs: a saved tensor (or tuple) whose first "
        "dimension is the sample; used for accuracy and throughput instead of random ones.")
@option("--samples", type=click.IntRange(min=1), default=512, show_default=True,
        help="Inputs compared with the fp32 original.")
@option("--seconds", type=click.FloatRange(min=0.1), default=3.0, show_default=True,
        help="Measuring time per model and batch size.")
@option("--task", type=click.Choice([task.value for task in AccuracyTask]), default="auto", show_default=True,
        help="Which accuracy check gates: top-1 agreement (classifier) or cosine (embedding); auto: what the "
             "archive declares (optimize_inputs.task), else told from the outputs.")
@option("--min-top1-agreement", type=click.FloatRange(0, 1), default=0.99, show_default=True)
@option("--min-cosine", type=click.FloatRange(-1, 1), default=0.999, show_default=True)
@option("--force", is_flag=True, help="Write the artifact even when it is not accurate enough or is slower.")
@option("--output", "-o", metavar="PATH", help="Artifact: NAME.mar (the archive, set to run optimized) or NAME.pt "
        "(the traced graph). Default: <model>-<dtype>[-cl][-graph].mar next to where you are.")
@option("--report-dir", metavar="DIR", help="Where summary.json and report.md go (default results/<ts>-optimize-<name>).")
@option("--threads", type=click.IntRange(min=1), help="torch threads for the measurement (default: torch's).")
def optimize(model: str | None, **params: Any) -> None:
    """Optimize a model for this CPU, measure it against the original, and write it if it is accurate.

    \b
    Examples:
      launchkit optimize --example resnet18                       # bf16 + channels-last + TorchScript
      launchkit optimize resnet18.mar --dtype bf16 -o resnet18-bf16.mar
      launchkit optimize --example mnist --dtype int8 --no-channels-last -o mnist-int8.mar
      launchkit optimize resnet18.mar --dtype int8 --calibration images/ -o resnet18-int8.mar
      launchkit serve resnet18-bf16.mar                           # workers rebuild the optimized graph

    Exit status: 0 written (or measured), 2 bad usage, 4 refused: not accurate enough, 5 refused:
    slower than the original (in every interleaved round, by more than 5%); --force writes anyway.
    """
    from rich.console import Console
    from rich.table import Table

    from launchkit.core.results import default_report_dir, writable_folder
    from launchkit.model.spec import OptimizationSpec
    from launchkit.optimize.command import OptimizeRequest, run_optimize, write_report

    if model and params["example"]:
        raise UsageError("give MODEL or --example, not both")
    dtype = _dtype(params["dtype"])  # before minutes of measuring
    request = OptimizeRequest(
        spec=OptimizationSpec(dtype, params["channels_last"], params["graph"], int8=params["int8_mode"]),
        target=model, example=params["example"], batch_sizes=_ints(params["batch_sizes"], "--batch-sizes"),
        input_shape=_ints(params["input_shape"], "--input-shape") if params["input_shape"] else None,
        inputs_file=params["inputs_file"], samples=params["samples"], seconds=params["seconds"],
        task=AccuracyTask(params["task"]), min_top1=params["min_top1_agreement"], min_cosine=params["min_cosine"],
        force=params["force"], output=params["output"], threads=params["threads"], calibration=params["calibration"],
        calibration_samples=params["calibration_samples"],
    )
    # the report's place is checked before minutes of measuring (the default folder's name needs the model's)
    folder = writable_folder(params["report_dir"], "--report-dir") if params["report_dir"] else None
    if folder is None:
        writable_folder(default_report_dir(None).parent, "--report-dir")
    console = Console(stderr=True, highlight=False)
    result = run_optimize(request, progress=lambda message: console.print(f"[dim]launchkit optimize: {message}[/dim]"))
    table = Table(title=f"launchkit optimize: {result.name}\n{result.path}", title_justify="left")
    for column in ("batch", "original samples/s", "optimized samples/s", "speed-up"):
        table.add_column(column, justify="right")
    for row in result.throughput:
        table.add_row(str(row["batch_size"]), f"{row['original']:.1f}", f"{row['optimized']:.1f}", f"{row['speedup']:.2f}×")
    Console(highlight=False).print(table)
    a = result.agreement
    click.echo(f"agreement with fp32 on {a['samples']} inputs ({result.task}): top-1 {a['top1_agreement']:.2%}, "
               f"cosine min {a['min_cosine']} mean {a['mean_cosine']}, max |diff| {a['max_abs_diff']:.3g}")
    if result.labels:
        labels = result.labels
        click.echo(f"label accuracy on {labels['samples']} held-out labelled inputs: fp32 {labels['original']:.2%}, "
                   f"optimized {labels['optimized']:.2%} ({-labels['drop_points']:+.2f} points)")
    folder = folder or default_report_dir(f"optimize-{result.name}")
    write_report(result, folder, sys.argv)
    click.echo(f"report: {folder}/")
    if result.artifact:
        forced = not result.accepted or result.slower
        click.echo(f"written: {result.artifact}" + (f" (forced: {result.reason})" if forced else ""))
    elif result.throughput and not result.slower and max(row["speedup"] for row in result.throughput) < 1.05:
        click.echo("note: the optimized model is not measurably faster here; serving the original is as good",
                   err=True)
    if request.force:
        return
    if not result.accepted:
        raise AccuracyRefused(f"not written: {result.reason}. Try --dtype fp32 or bf16 (int8 is the usual culprit), "
                              "or --force to write it anyway.")
    if result.slower and result.output:  # measuring alone (a TorchScript input) writes nothing to refuse
        speed = ", ".join(f"batch {row['batch_size']}: {row['speedup']:.2f}×" for row in result.throughput)
        raise NotFaster(f"not written: the optimized model is {result.reason} ({speed}). Serve the original, try "
                        "another --dtype or --graph, or --force to write it anyway.")
