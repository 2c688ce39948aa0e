"""`launchkit tune`: flags in, one call to launchkit.tune.runner.run_tune, a line per trial, the verdict out."""

from __future__ import annotations

import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from launchkit.cli.options import CONTEXT, option
from launchkit.core.errors import NoConfiguration, UsageError


def _seconds(text: str) -> float:
    """``600``, ``90s``, ``10m`` or ``1h`` → seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise UsageError(f"--max-time {text!r}: expected a positive duration such as 600, 90s, 10m or 1h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


@click.command(context_settings=CONTEXT)
@click.argument("target", required=False, metavar="[MODEL.mar|EXAMPLE]")
@option("--latency-budget", type=click.FloatRange(min=0, min_open=True), metavar="MS",
        help="Largest acceptable latency at --percentile, in ms (default: none; throughput alone decides).")
@option("--percentile", type=click.FloatRange(0, 100, min_open=True), default=99.0, show_default=True,
        help="The latency percentile the budget applies to.")
@option("--min-throughput", type=click.FloatRange(min=0), metavar="REQ/S", help="Reject configurations below this.")
@option("--max-memory", type=click.FloatRange(min=0, min_open=True), metavar="MIB",
        help="Reject configurations whose server and workers hold more resident memory.")
@option("--objective", type=click.Choice(["throughput", "latency"]), default="throughput", show_default=True,
        help="What the best configuration maximizes (latency: the lowest percentile latency).")
@option("--mode", type=click.Choice(["quick", "brute"]), default="quick", show_default=True,
        help="quick: hill-climb from the better of the default configuration and one worker per core; "
             "brute: every configuration of --space.")
@option("--space", default="", metavar="KNOB=V,V;...", help="Values to try per knob, replacing the defaults: "
        "workers, cores (per worker, or auto), streams, batch, delay (ms), variant (original|bf16|int8, each "
        "through launchkit optimize's accuracy gate), allocator (auto|default|tcmalloc|jemalloc), omp "
        "(auto|gnu|intel|default), wait (auto|spin|brief|passive). E.g. 'workers=1,2;batch=1,4,8;delay=0,2,5'.")
@option("--max-time", default="10m", show_default=True, metavar="DURATION",
        help="Stop starting configurations after this long (600, 90s, 10m, 1h); what was measured is kept.")
@option("--level-seconds", type=click.FloatRange(min=0.2), default=3.0, show_default=True,
        help="Measuring time per concurrency level.")
@option("--input", "inputs", multiple=True, metavar="FILE",
        help="Request body (repeatable); default: the archive's declared sample input.")
@option("--content-type", help="Content-Type of --input bodies (default application/octet-stream).")
@option("--report-dir", metavar="DIR", help="Where the report goes (default results/<ts>-tune-<model>).")
@option("--resume", metavar="DIR", help="Continue the search of an interrupted run, in its report folder.")
@option("--run", "program", metavar="'PROGRAM [ARGS]'", help="Tune a `launchkit run` program instead of a served "
        "model: instances x allocator x OpenMP runtime (--space 'instances=1,2,4;allocator=auto,jemalloc;omp=auto,gnu'"
        "), the program's own figure read by --metric and summed over instances; writes best-command.txt.")
@option("--metric", metavar="REGEX|KEY", help="With --run: a regex whose first group is the figure (e.g. "
        "'throughput: ([0-9.]+)'), or the key of a JSON line the program prints. Higher is better.")
@option("--run-timeout", type=click.FloatRange(min=1), default=600.0, show_default=True, metavar="S",
        help="With --run: longest one run may take.")
@option("--quiet", "-q", is_flag=True, help="Only the verdict.")
def tune(target: str | None, **params: Any) -> None:
    """Find the best serving configuration for a model on this machine, within a latency budget.

    Starts `launchkit serve` for each configuration (rescaling in place when only the worker count
    changes), drives it with bench's load generator at increasing concurrency until throughput
    stops growing or the budget breaks, and keeps every measurement. TARGET: a .mar, a bundled
    example (tiny, resnet18, minilm, mnist), or nothing (tiny).

    \b
    Examples:
      launchkit tune --latency-budget 5                       # tiny, p99 <= 5 ms
      launchkit tune resnet18 --latency-budget 200 --max-time 10m
      launchkit tune model.mar --space 'workers=1,2;batch=1,4,8;delay=0,5' --mode brute
      launchkit serve --ts-config results/<run>/best/config.properties   # serve what it found

    Writes summary.json (default, best, every trial), trials.csv, tune.png, report.md and
    best/config.properties + best/serve-command.txt. Exit status: 0 found; 2 bad usage; 7 no
    configuration meets the constraints (the report names the closest); 128+N stopped by signal N
    (what was measured is kept; --resume continues).
    """
    if params["program"] is not None or params["metric"] is not None:
        _tune_program(target, params)
        return
    from launchkit.tune.measure import MeasureSettings, trial_line
    from launchkit.tune.runner import TuneRequest, prepare, run_tune
    from launchkit.tune.search import Constraints

    max_time = _seconds(params["max_time"])
    constraints = Constraints(params["latency_budget"], params["percentile"], params["min_throughput"],
                              params["max_memory"], params["objective"])
    request = TuneRequest(target, constraints, params["mode"], params["space"], max_time,
                          MeasureSettings(level_seconds=params["level_seconds"],
                                          warmup_seconds=min(1.0, params["level_seconds"])),
                          tuple(params["inputs"]), params["content_type"])
    resume = Path(params["resume"]) if params["resume"] else None
    request, folder = prepare(request, resume, params["report_dir"])
    quiet = params["quiet"]
    started = time.monotonic()
    best: list[Any] = [None]

    def finished(trial: Any, echo: Any) -> None:
        if trial.feasible and (best[0] is None or trial.chosen.throughput_rps > best[0].chosen.throughput_rps):
            best[0] = trial
        left = max(max_time - (time.monotonic() - started), 0)
        leader = f"; best so far {best[0].chosen.throughput_rps:,.1f} req/s" if best[0] else ""
        echo(f"launchkit tune: {trial_line(trial, constraints)}  [{left / 60:.1f} min left{leader}]")

    if quiet:
        result = run_tune(request, folder, lambda message: None, lambda trial: None, resume)
    elif sys.stderr.isatty():  # a live line for the step in progress, a permanent line per trial
        from rich.console import Console

        console = Console(stderr=True, highlight=False)
        with console.status("launchkit tune: preparing") as spinner:
            result = run_tune(request, folder, lambda message: spinner.update(f"launchkit tune: {message}"),
                              lambda trial: finished(trial, console.print), resume)
    else:  # a CI log: what is being measured and what each configuration gave, not every level
        def headline(message: str) -> None:
            if message.startswith(("trial ", "checking ")):
                click.echo(f"launchkit tune: {message}", err=True)

        result = run_tune(request, folder, headline, lambda trial: finished(trial, lambda line: click.echo(line, err=True)),
                          resume)
    _finish(result, folder)


def _tune_program(target: str | None, params: dict[str, Any]) -> None:
    """--run: the best `launchkit run` recipe for a program that prints its own figure."""
    from launchkit.tune.programs import RunStatus, prepare_program, tune_program

    serving_only = [flag for flag, key in (("TARGET", None), ("--latency-budget", "latency_budget"),
                                           ("--min-throughput", "min_throughput"), ("--max-memory", "max_memory"),
                                           ("--resume", "resume"), ("--input", "inputs"))
                    if (target if key is None else params[key])]
    program, cpus, folder = prepare_program(params["program"], params["metric"], params["space"],
                                            params["report_dir"], serving_only)
    say = (lambda line: None) if params["quiet"] else (lambda line: click.echo(line, err=True))

    def finished(trial: Any) -> None:
        figure = f"{trial.total:,.2f} (instances: {', '.join(f'{v:,.2f}' for v in trial.per_instance)})" \
            if trial.status is RunStatus.OK else f"{trial.status}: {trial.error}"
        say(f"launchkit tune: {trial.config.label()}: {figure}  [{trial.seconds:.1f} s]")

    result = tune_program(program, params["metric"], cpus, params["space"], _seconds(params["max_time"]),
                          params["run_timeout"], folder, finished)
    best, default = result.best, result.default
    if result.interrupted:
        click.echo(f"launchkit tune: stopped by {result.interrupted}; what was measured is in {folder}/summary.json",
                   err=True)
        sys.exit(128 + signal.Signals[result.interrupted])
    if best is None:
        click.echo("no configuration produced the figure (see trials in summary.json)")
        raise NoConfiguration("no run of the program printed a figure --metric could read; check --metric against "
                              "its output")
    versus = f", {best.total / default.total:.2f}× the default (1 instance)" \
        if default and default.total and best.total else ""
    click.echo(f"best: {best.config.label()}: {best.total or 0.0:,.2f}{versus}")
    click.echo(f"run it: {result.best_command}", err=True)
    click.echo(f"report: {folder}/ (summary.json, best-command.txt)", err=True)


def _finish(result: Any, folder: Path) -> None:
    from launchkit.tune.report import write_report

    summary = write_report(result, folder)
    click.echo(summary["verdict"])
    click.echo(f"report: {folder}/ (summary.json, trials.csv, tune.png, report.md"
               f"{', best/config.properties' if summary['best'] else ''})", err=True)
    if summary["best"]:
        click.echo(f"serve it: launchkit serve --ts-config {folder / 'best' / 'config.properties'}", err=True)
    if result.interrupted:
        click.echo(f"launchkit tune: stopped by {result.interrupted}; continue with --resume {folder}", err=True)
        sys.exit(128 + signal.Signals[result.interrupted])
    if result.time_up:
        click.echo(f"launchkit tune: --max-time reached; continue with --resume {folder}", err=True)
    if summary["best"] is None:
        raise NoConfiguration("no configuration meets the constraints; the report names the closest (loosen "
                              "--latency-budget / --min-throughput / --max-memory, or widen --space)")
