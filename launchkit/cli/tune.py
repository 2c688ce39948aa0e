"""`launchkit tune`: flags in (checked by launchkit.tune.flags into one of two searches), a line per trial, the verdict out."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from launchkit.cli.options import CONTEXT, option
from launchkit.core.errors import NoConfiguration

if TYPE_CHECKING:
    from launchkit.tune.flags import ProgramSearch, ServingSearch
    from launchkit.tune.programs import RunTrial
    from launchkit.tune.runner import TuneResult
    from launchkit.tune.search import Trial


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
    from launchkit.tune.flags import ProgramSearch, tune_request

    search = tune_request({"target": target, **params})
    if isinstance(search, ProgramSearch):
        _tune_program(search, params["quiet"])
    else:
        _tune_serving(search, params["quiet"])


def _tune_serving(search: ServingSearch, quiet: bool) -> None:
    """The best serving configuration of a model: a line per configuration, the verdict, the report."""
    from launchkit.tune.measure import trial_line
    from launchkit.tune.runner import run_tune

    request, folder, resume = search.request, search.folder, search.resume
    constraints = request.constraints
    started = time.monotonic()
    best: Trial | None = None

    def finished(trial: Trial, echo: Callable[[str], object]) -> None:
        nonlocal best
        if trial.feasible and trial.chosen and (best is None or best.chosen is None
                                                or trial.chosen.throughput_rps > best.chosen.throughput_rps):
            best = trial
        left = max(request.max_time_s - (time.monotonic() - started), 0)
        leader = f"; best so far {best.chosen.throughput_rps:,.1f} req/s" if best and best.chosen else ""
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


def _tune_program(search: ProgramSearch, quiet: bool) -> None:
    """--run: the best `launchkit run` recipe for a program that prints its own figure."""
    from launchkit.tune.programs import RunStatus, tune_program

    say: Callable[[str], None] = (lambda line: None) if quiet else (lambda line: click.echo(line, err=True))

    def finished(trial: RunTrial) -> None:
        figure = f"{trial.total:,.2f} (instances: {', '.join(f'{v:,.2f}' for v in trial.per_instance)})" \
            if trial.status is RunStatus.OK else f"{trial.status}: {trial.error}"
        say(f"launchkit tune: {trial.config.label()}: {figure}  [{trial.seconds:.1f} s]")

    folder = search.folder
    result = tune_program(list(search.program), search.metric, search.cpus, search.space, search.max_time_s,
                          search.run_timeout_s, folder, finished)
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


def _finish(result: TuneResult, folder: Path) -> None:
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
