"""`launchkit bench` and `launchkit report compare`: flags in, one call to the bench package, a table out.

benchmark-ab.py's spellings are accepted (``--url/-u``, ``--concurrency/-c``, ``--requests/-r``,
``--batch_size/-bs``, ``--batch_delay/-bd``, ``--workers/-w``, ``--input/-i``,
``--content_type/-ic``, ``--report_location/-rl``, ``--config FILE.json``), and perf_analyzer's
``--concurrency-range`` and ``--percentile``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from launchkit.cli.options import CONTEXT, option
from launchkit.core.errors import UsageError
AB_CONFIG_KEYS = {"url", "concurrency", "requests", "batch_size", "batch_delay", "workers", "input", "content_type",
                  "report_location", "duration", "rate", "warmup", "timeout"}


def parse_range(text: str, flag: str, kind: type) -> tuple[Any, ...]:
    """``start:end[:step]`` (perf_analyzer's form), end included."""
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        start, end = kind(parts[0]), kind(parts[1])
        step = kind(parts[2]) if len(parts) == 3 else kind(1)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected start:end[:step], e.g. 1:8 or 1:16:2") from None
    if step <= 0 or end < start or start <= 0:
        raise UsageError(f"{flag} {text!r}: need 0 < start <= end and a positive step")
    values, value = [], start
    while value <= end + (1e-9 if kind is float else 0):
        values.append(value)
        value += step
    return tuple(values)


def parse_warmup(text: str | None) -> tuple[int, float]:
    """``--warmup 200`` (requests) or ``--warmup 2s`` (seconds)."""
    if not text:
        return 0, 0.0
    try:
        if text.endswith("s"):
            return 0, float(text[:-1])
        return int(text), 0.0
    except ValueError:
        raise UsageError(f"--warmup {text!r}: give a number of requests (200) or seconds (2s)") from None


def _load_ab_config(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as error:
        raise UsageError(f"--config {path}: {error.strerror}") from None
    except ValueError as error:
        raise UsageError(f"--config {path}: not valid JSON ({error})") from None
    unknown = set(data) - AB_CONFIG_KEYS
    if unknown:
        raise UsageError(f"--config {path}: unknown keys {sorted(unknown)}; known: {sorted(AB_CONFIG_KEYS)}")
    return data


@click.command(context_settings=CONTEXT)
@click.argument("target", required=False)
@click.option("-u", "--url", help="Target URL (same as TARGET).")
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
@click.option("-i", "--input", "inputs", multiple=True, metavar="FILE", help="Request body; repeat to rotate bodies.")
@click.option("-ic", "--content-type", "--content_type", "content_type",
              help="Content-Type of the bodies (default application/octet-stream).")
@option("--percentile", type=click.FloatRange(0, 100), multiple=True, help="Extra percentile to report, e.g. 99.99.")
@option("--stability", is_flag=True, help="Repeat windows until the last 3 agree (perf_analyzer-like).")
@option("--stability-percentage", type=click.FloatRange(min=0), default=10.0, show_default=True)
@option("--max-windows", type=click.IntRange(min=3), default=10, show_default=True)
@option("--trials", type=click.IntRange(min=1), default=1, show_default=True, help="Repeat the run; report medians.")
@click.option("-w", "--workers", type=click.IntRange(min=1), help="Workers of the server bench starts.")
@click.option("-bs", "--batch-size", "--batch_size", "batch_size", type=click.IntRange(min=1))
@click.option("-bd", "--batch-delay", "--batch_delay", "batch_delay", type=click.FloatRange(min=0), metavar="MS")
@option("--cpu-launcher-args", metavar="ARGS", help="launchkit run flags for the server's workers.")
@option("--management-url", metavar="URL",
        help="A URL target's management API, for the settings as applied (default: its host, port 8081).")
@option("--metrics-url", metavar="URL",
        help="A URL target's /metrics, for the server-side view (default: its host, port 8082, /metrics).")
@click.option("-rl", "--report-dir", "--report_location", "report_dir", metavar="DIR",
              help="Report folder (default results/<timestamp>-<name>/).")
@option("--name", help="Name of the run (report folder suffix).")
@option("--config", "ab_config", metavar="FILE.json", help="benchmark-ab.py style JSON config.")
@option("--compare", metavar="BASELINE", help="Baseline summary.json (or report folder) to gate against.")
@option("--fail-on", default="throughput=-5%,p99=+10%", show_default=True, help="Regression thresholds.")
@click.option("-q", "--quiet", is_flag=True, help="No live progress (for CI logs).")
def bench(**params: Any) -> None:
    """Load-test a model server and write a report (table, CSV, JSON, Markdown, plots).

    TARGET is an http:// URL (e.g. http://127.0.0.1:8080/predictions/tiny), a .mar file (bench
    starts `launchkit serve` with it, and stops it), or nothing: the bundled tiny example.
    Every non-2xx response is an error. Exit status: 0, 2 bad usage, 3 regression (--compare).

    \b
    Examples:
      launchkit bench --concurrency 8 --requests 5000
      launchkit bench resnet18.mar --concurrency-range 1:8 --duration 10 -bs 8 -bd 5
      launchkit bench http://127.0.0.1:8080/predictions/tiny --rate 500 --duration 10
      launchkit bench -c 8 -r 5000 --compare baseline/summary.json --fail-on throughput=-5%,p99=+10%
    """
    from launchkit.bench.compare import load_summary
    from launchkit.bench.report import write_report
    from launchkit.core.results import default_report_dir
    from launchkit.bench.runner import BenchConfig
    from launchkit.bench.stats import DEFAULT_PERCENTILES
    from launchkit.cli.tables import print_bench_table

    if params["ab_config"]:
        for key, value in _load_ab_config(params["ab_config"]).items():
            key = {"report_location": "report_dir", "input": "inputs"}.get(key, key)
            if key == "inputs":  # one file or a list of files
                value = tuple(value) if isinstance(value, list) else (value,)
            if params.get(key) in (None, ()):  # flags on the command line win
                params[key] = value
    target = params["target"] or params["url"]
    if params["target"] and params["url"] and params["target"] != params["url"]:
        raise UsageError("give the target once: as TARGET or as --url")
    levels = (params["concurrency"],) if params["concurrency"] else (1,)
    if params["concurrency_range"]:
        levels = parse_range(params["concurrency_range"], "--concurrency-range", int)
    rates: tuple[float, ...] = ()
    if params["rate"] or params["rate_range"]:
        if params["concurrency"] or params["concurrency_range"]:
            raise UsageError("choose closed loop (--concurrency) or open loop (--rate), not both")
        rates = parse_range(params["rate_range"], "--rate-range", float) if params["rate_range"] else (params["rate"],)
    warmup_requests, warmup_s = parse_warmup(str(params["warmup"]) if params["warmup"] is not None else "100")
    requests = params["requests"]
    if requests is None and params["duration"] is None:
        requests = 1000
    percentiles = tuple(sorted(set(DEFAULT_PERCENTILES) | set(params["percentile"])))
    config = BenchConfig(
        target=target, concurrency=levels, rates=rates, poisson=params["poisson"], requests=requests,
        duration_s=params["duration"], warmup_requests=warmup_requests, warmup_s=warmup_s,
        timeout_s=params["timeout"] or 30.0, inputs=tuple(params["inputs"]),
        content_type=params["content_type"] or "application/octet-stream",
        percentiles=percentiles, stability=params["stability"],
        stability_tolerance=params["stability_percentage"] / 100, max_windows=params["max_windows"],
        trials=params["trials"], workers=params["workers"], batch_size=params["batch_size"],
        batch_delay_ms=params["batch_delay"], cpu_launcher_args=params["cpu_launcher_args"], name=params["name"],
        management_url=params["management_url"], metrics_url=params["metrics_url"],
    )
    baseline = load_summary(params["compare"]) if params["compare"] else None
    folder = Path(params["report_dir"]) if params["report_dir"] else default_report_dir(params["name"])
    with tempfile.TemporaryDirectory(prefix="launchkit-bench-") as work:
        result = _run_with_progress(config, Path(work), params["quiet"])
    summary = write_report(result, folder)
    print_bench_table(result)
    click.echo(f"report: {folder}/ (summary.json, results.csv, report.md, *.png)", err=True)
    failed = sum(level.requests_failed for level in result.levels)
    if failed:
        click.echo(f"launchkit bench: {failed} request(s) failed (non-2xx or connection errors); see the report",
                   err=True)
    if baseline is not None:
        _gate(baseline, summary, params["fail_on"])


def _run_with_progress(config: Any, work: Path, quiet: bool) -> Any:
    from launchkit.bench.runner import run_bench

    if quiet or not sys.stderr.isatty():
        return run_bench(config, work)
    from rich.console import Console
    from rich.live import Live

    console = Console(stderr=True)
    with Live(console=console, refresh_per_second=4, transient=True) as live:
        def progress(label: str, samples: Any) -> None:
            elapsed = max((samples.completed_at_ns[-1] - samples.started_ns) / 1e9, 1e-9) if samples.ok else 0
            recent = sorted(samples.latency_ns[-2000:])
            p50 = recent[len(recent) // 2] / 1e6 if recent else 0.0
            p99 = recent[int(len(recent) * 0.99)] / 1e6 if recent else 0.0
            rate = samples.ok / elapsed if elapsed else 0.0
            live.update(f"{label}: {samples.ok} ok, {samples.failed} failed, {rate:,.0f} req/s, "
                        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms (recent)")

        return run_bench(config, work, progress=progress)


@click.group(context_settings=CONTEXT)
def report() -> None:
    """Work with existing bench reports."""


@report.command("compare", context_settings=CONTEXT)
@click.argument("baseline")
@click.argument("current")
@option("--fail-on", default="throughput=-5%,p99=+10%", show_default=True, help="Regression thresholds.")
def report_compare(baseline: str, current: str, fail_on: str) -> None:
    """Compare two runs (summary.json or report folders); exit 3 on a regression beyond --fail-on."""
    from launchkit.bench.compare import load_summary

    _gate(load_summary(baseline), load_summary(current), fail_on)


def _gate(baseline: dict[str, Any], current: dict[str, Any], fail_on: str) -> None:
    from launchkit.bench.compare import compare, parse_fail_on, raise_on_regression
    from launchkit.cli.tables import print_comparison

    rows = compare(baseline, current, parse_fail_on(fail_on))
    print_comparison(rows)
    raise_on_regression(rows)
