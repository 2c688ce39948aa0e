"""`launchkit bench` and `launchkit report compare`: flags in, one call to the bench package, a table out.

benchmark-ab.py's spellings are accepted (``--url/-u``, ``--concurrency/-c``, ``--requests/-r``,
``--batch_size/-bs``, ``--batch_delay/-bd``, ``--workers/-w``, ``--input/-i``,
``--content_type/-ic``, ``--report_location/-rl``, ``--config FILE.json``), and perf_analyzer's
``--concurrency-range`` and ``--percentile``. Everything is checked before the run starts.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from launchkit.cli.exits import BENCH_EXIT_HELP, COMPARE_EXIT_HELP
from launchkit.cli.options import CONTEXT, option
from launchkit.core.errors import RequestsFailed

if TYPE_CHECKING:
    from launchkit.bench.compare import Threshold


@click.command(context_settings=CONTEXT, epilog=BENCH_EXIT_HELP)
@click.argument("target", required=False)
@click.option("-u", "--url", help="Target URL (same as TARGET); an http(s) URL of a .mar is registered.")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), help="Closed loop: requests in flight (default 1).")
@option("--concurrency-range", metavar="START:END[:STEP]", help="Sweep concurrency levels, e.g. 1:8:2.")
@option("--rate", type=click.FloatRange(min=0, min_open=True), help="Open loop: requests per second.")
@option("--rate-range", metavar="START:END[:STEP]", help="Sweep rates, e.g. 100:500:100.")
@option("--poisson", is_flag=True, help="Open loop with Poisson arrivals (default: constant spacing).")
@click.option("-r", "--requests", type=click.IntRange(min=1), help="Requests per level (default 1000 unless --duration).")
@option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="S", help="Seconds per level.")
@option("--warmup", metavar="N|Ns", help="Warm-up per level, excluded from results: N requests or Ns seconds "
        "(default 100; 0: none).")
@option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="S", help="Per request (default 30).")
@click.option("-i", "--input", "inputs", multiple=True, metavar="FILE",
              help="Request body; repeat to rotate bodies. Default: the sample the archive declares (bench_input in "
                   "its model-config.yaml; the bundled examples have one). A URL target needs it.")
@click.option("-ic", "--content-type", "--content_type", "content_type",
              help="Content-Type of --input bodies (default application/octet-stream).")
@click.option("-m", "--method", metavar="METHOD",
              help="HTTP method (default POST with a body, GET without: a URL target and no --input).")
@click.option("-H", "--header", "headers", multiple=True, metavar='"NAME: VALUE"',
              help="Header sent on every request; repeatable. Credential values (Authorization, Cookie, ...) "
                   "are masked in reports.")
@option("--percentile", type=click.FloatRange(0, 100), multiple=True, help="Extra percentile to report, e.g. 99.99.")
@option("--stability", is_flag=True, help="Repeat windows until the last 3 agree (perf_analyzer-like).")
@option("--stability-percentage", type=click.FloatRange(min=0), default=10.0, show_default=True)
@option("--max-windows", type=click.IntRange(min=3), default=10, show_default=True)
@option("--trials", type=click.IntRange(min=1), default=1, show_default=True, help="Repeat the run; report medians.")
@option("--clients", type=click.IntRange(min=1), default=1, show_default=True, metavar="P",
        help="Load-generating processes: each level's connections (or rate) split over P processes that start "
             "together; latencies merged exactly. For targets one process cannot saturate (replicas).")
@option("--max-error-rate", default="0%", show_default=True, metavar="PERCENT",
        help="Failed requests (non-2xx, connection errors) a level may have; above it the run exits 6.")
@click.option("-w", "--workers", type=click.IntRange(min=1), help="Workers of the server bench starts (a .mar target).")
@click.option("-bs", "--batch-size", "--batch_size", "batch_size", type=click.IntRange(min=1),
              help="Batch size of the server bench starts.")
@click.option("-bd", "--batch-delay", "--batch_delay", "batch_delay", type=click.FloatRange(min=0), metavar="MS",
              help="Batch delay (ms) of the server bench starts.")
@option("--cpu-launcher-args", metavar="ARGS", help="launchkit run flags for the server's workers.")
@option("--management-url", metavar="URL",
        help="A URL target's management API, for the settings as applied (default: its host, port 8081).")
@option("--metrics-url", metavar="URL",
        help="A URL target's /metrics, for the server-side view (default: its host, port 8082, /metrics).")
@click.option("-rl", "--report-dir", "--report_location", "report_dir", metavar="DIR",
              help="Report folder (default results/<timestamp>-<name>/); created and checked before the run.")
@option("--name", help="Name of the run (report folder suffix).")
@option("--config", "ab_config", metavar="FILE.json", help="benchmark-ab.py style JSON config.")
@option("--compare", metavar="BASELINE", help="Baseline summary.json (or report folder) to gate against.")
@option("--fail-on", default="throughput=-5%,p99=+10%", show_default=True, help="Regression thresholds.")
@option("--force", is_flag=True, help="Compare with a baseline even if it measured another model or settings.")
@click.option("-q", "--quiet", is_flag=True, help="No live progress (for CI logs).")
def bench(**params: Any) -> None:
    """Load-test a model server and write a report (table, CSV, JSON, Markdown, plots).

    TARGET is an http:// URL (e.g. http://127.0.0.1:8080/predictions/tiny; without --input it gets
    GETs, as from ab or hey), a .mar file (bench starts `launchkit serve` with it, and stops it), an
    http(s) URL of a .mar (registered on a server bench starts; allowed for that URL only), a
    bundled example's name (tiny, resnet18, minilm, mnist), or nothing: the bundled tiny example. Every
    non-2xx response is an error; a level with more than --max-error-rate of them fails the run.

    \b
    Examples:
      launchkit bench --concurrency 8 --requests 5000
      launchkit bench resnet18 --concurrency 4 --duration 10         # a bundled example by name
      launchkit bench resnet18.mar --concurrency-range 1:8 --duration 10 -bs 8 -bd 5
      launchkit bench http://127.0.0.1:8080/predictions/tiny -i body.bin --rate 500 --duration 10
      launchkit bench http://127.0.0.1:8080/ping -c 8 -r 2000        # no --input: GET
      launchkit bench URL -i kitten.jpg -H "Authorization: Bearer $(jq -r .inference.key key_file.json)"
      launchkit bench -c 8 -r 5000 --compare baseline/summary.json --fail-on throughput=-5%,p99=+10%
    """
    from launchkit.bench.flags import bench_request

    request = bench_request(params)
    for note in request.notes:
        click.echo(f"launchkit bench: note: {note}", err=True)
    result = _run_with_progress(request.config, request.folder, params["quiet"])
    _finish(result, request.folder, request.baseline, request.fail_on)


def _finish(result: Any, folder: Path, baseline: dict[str, Any] | None, fail_on: tuple[Threshold, ...]) -> None:
    """Report, table, errors, the gate, the exit status: the run's verdict, in that order."""
    from launchkit.bench.report import write_report
    from launchkit.cli.tables import print_bench_table, print_errors

    summary = write_report(result, folder)
    print_bench_table(result)
    for note in result.notes:
        click.echo(f"launchkit bench: note: {note}", err=True)
    print_errors(result)
    click.echo(f"report: {folder}/ (summary.json, results.csv, report.md, *.png"
               f"{', server.log' if result.server_log else ''})", err=True)
    if result.interrupted:
        signum = signal.Signals[result.interrupted]
        click.echo(f"launchkit bench: stopped by {result.interrupted}; the report holds what was measured", err=True)
        sys.exit(128 + signum)
    over = [level for level in result.levels if level.error_rate > result.config.max_error_rate]
    if over:
        worst = max(over, key=lambda level: level.error_rate)
        raise RequestsFailed(f"{worst.requests_failed} of {worst.requests_ok + worst.requests_failed} requests failed "
                             f"at {worst.level} ({worst.error_rate:.1%}; --max-error-rate "
                             f"{result.config.max_error_rate:.0%}): the figures describe failures, not the model")
    if baseline is not None:
        _gate(baseline, summary, fail_on)


def _run_with_progress(config: Any, folder: Path, quiet: bool) -> Any:
    from launchkit.bench.runner import run_bench

    if quiet:
        return run_bench(config, folder)
    if not sys.stderr.isatty():  # a CI log: the steps as plain lines, no live display
        return run_bench(config, folder, status=lambda message: click.echo(f"launchkit bench: {message}", err=True))
    from launchkit.cli.progress import BenchProgress

    with BenchProgress(config) as display:
        return run_bench(config, folder, progress=display.level, status=display.status)


@click.group(context_settings=CONTEXT)
def report() -> None:
    """Work with existing bench reports."""


@report.command("compare", context_settings=CONTEXT, epilog=COMPARE_EXIT_HELP)
@click.argument("baseline")
@click.argument("current")
@option("--fail-on", default="throughput=-5%,p99=+10%", show_default=True, help="Regression thresholds.")
def report_compare(baseline: str, current: str, fail_on: str) -> None:
    """Compare two runs (summary.json or report folders); exit 3 on a regression beyond --fail-on."""
    from launchkit.bench.compare import load_summary, parse_fail_on

    _gate(load_summary(baseline), load_summary(current), tuple(parse_fail_on(fail_on)))


def _gate(baseline: dict[str, Any], current: dict[str, Any], fail_on: tuple[Threshold, ...]) -> None:
    from launchkit.bench.compare import compare, raise_on_regression
    from launchkit.cli.tables import print_comparison

    rows = compare(baseline, current, list(fail_on))
    print_comparison(rows)
    raise_on_regression(rows)
