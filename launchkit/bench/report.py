"""Report files of a run: summary.json, results.csv (long format), report.md and PNG plots.

summary.json holds everything needed to compare runs later: tool version, git revision, the
command line, the machine (``launchkit info``), the model, the server settings as applied, every
level. report.md is written for a person: a title with the model, date and settings, one table,
the settings as a table, every column explained once, and the limits of each figure said where
they matter (a p99.9 from 300 samples; a server-side estimate inside its histogram's first bucket).
Plots are drawn with matplotlib's Agg backend, levels sorted, y axes from zero.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from launchkit import __version__
from launchkit.bench.config import masked, masked_argv
from launchkit.bench.runner import BenchResult
from launchkit.bench.stats import LevelResult

COLUMNS = {
    "level": "the load: c=N keeps N requests in flight (closed loop); rate=R/s sends R per second (open loop)",
    "req/s": "answers with a 2xx status per second over the level",
    "pNN ms": "latency percentiles of the 2xx answers, exact (numpy, linear interpolation), client side; in rate "
              "mode from each request's intended send time (coordinated omission corrected)",
    "ok / errors": "2xx answers / everything else: non-2xx statuses and connection failures, counted by kind",
    "server p50/p99 ms": "the server's own latency for these requests, estimated from its /metrics histogram "
                         "(six buckets per decade: within about a fifth)",
    "queue wait": "time a request waited for a worker, server side (mean exact, p99 estimated)",
    "batch size mean": "requests per batch the server sent to its workers",
    "handler ms": "the handler's time per batch: the whole call (and its inference stage)",
}


def _git_revision() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True,
                              cwd=Path(__file__).parent).stdout.strip() or None  # launchkit's own revision
    except (OSError, subprocess.SubprocessError):
        return None


def _machine() -> dict[str, Any]:
    try:
        from launchkit.launch.machine import machine_report

        report = machine_report()
        keys = ("sockets", "numa_nodes", "physical_cores", "logical_cpus", "threads_per_core", "allowed_cpu_list",
                "cpu_quota", "isa", "libraries")
        return {key: report[key] for key in keys}
    except Exception as error:  # noqa: BLE001 - the report is still useful without it
        return {"error": str(error), "platform": platform.platform()}


def min_samples(percentile_key: str) -> int:
    """Samples below which a percentile is the largest sample or near it: 100/(100-p) (p99.9: 1,000)."""
    percent = float(percentile_key[1:])
    return int(round(100 / (100 - percent))) if percent < 100 else 1 << 62


def settings_line(result: BenchResult) -> str:
    """The server settings in a few words, for titles: batch 8 / 5 ms, 2 workers."""
    server = result.server or {}
    parts = []
    if server.get("batchSize") is not None:
        parts.append(f"batch {server['batchSize']} / {server.get('maxBatchDelay', '?'):g} ms"
                     if isinstance(server.get("maxBatchDelay"), (int, float)) else f"batch {server['batchSize']}")
    if server.get("workers") is not None:
        parts.append(f"{len(server['workers'])} worker(s)")
    if server.get("optimization"):
        parts.append(str(server["optimization"]).split(" [")[0])
    return ", ".join(parts)


def title(result: BenchResult, created: str) -> str:
    what = f"{result.model} v{result.version}" if result.model and result.version else (result.model or result.url)
    settings = settings_line(result)
    return f"launchkit bench: {what}, {created[:10]}" + (f" ({settings})" if settings else "")


def summary_dict(result: BenchResult, argv: list[str]) -> dict[str, Any]:
    return {
        "tool": "launchkit bench",
        "version": __version__,
        "git_revision": _git_revision(),
        "command": masked_argv(argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "url": result.url,
        "model": result.model,
        "model_version": result.version,
        "machine": _machine(),
        "config": asdict(result.config) | {"headers": masked(result.config.headers)},
        "server": result.server,
        "notes": result.notes,
        "interrupted": result.interrupted,
        "client_cpu_s": result.client_cpu_s,
        "levels": [level.to_dict() | {"error_rate": round(level.error_rate, 6)} for level in result.levels],
        "trials": [[level.to_dict() for level in trial] for trial in result.trials] if len(result.trials) > 1 else [],
    }


def long_rows(levels: list[LevelResult]) -> list[dict[str, Any]]:
    """One row per level × metric: the shape pandas and spreadsheets pivot easily."""
    rows = []
    for level in levels:
        metrics: dict[str, float | int | None] = {
            "throughput_rps": level.throughput, "requests_ok": level.requests_ok,
            "requests_failed": level.requests_failed, "duration_s": level.duration_s,
        }
        metrics.update({f"latency_{key}_ms": value for key, value in level.latency_ms.items()})
        if level.uncorrected_latency_ms:
            metrics.update({f"uncorrected_{key}_ms": value for key, value in level.uncorrected_latency_ms.items()})
        if level.rate is not None:
            metrics.update(target_rate=level.rate, achieved_rate=level.achieved_rate, late_sends=level.late_sends)
        metrics.update({f"status_{status}": count for status, count in level.statuses.items()})
        metrics.update({f"error_{kind}": count for kind, count in level.errors.items()})
        for metric, value in metrics.items():
            rows.append({"level": level.level, "concurrency": level.concurrency, "rate": level.rate,
                         "metric": metric, "value": value})
    return rows


SERVER_VIEW_HEADERS = ["level", "server p50/p99 ms", "queue wait mean/p99 ms", "batch size mean",
                       "handler ms (inference)", "server statuses"]


def server_view_row(level: LevelResult) -> list[str]:
    view = level.server_view or {}

    def pair(key: str, first: str, second: str) -> str:
        part = view.get(key) or {}

        def one(name: str) -> str:
            if f"{name}_below" in part:  # inside the histogram's first bucket: only the bound is known
                return f"< {part[f'{name}_below']:g}"
            return str(part.get(name, "-"))

        return f"{one(first)} / {one(second)}"

    handler = view.get("handler_ms", {})
    inference = handler.get("inference", {}).get("mean")
    handle = handler.get("handle", {}).get("mean", "-")
    statuses = ", ".join(f"{code}: {count}" for code, count in sorted(view.get("requests_by_status", {}).items()))
    return [level.level, pair("latency_ms", "p50", "p99"), pair("queue_wait_ms", "mean", "p99"),
            str((view.get("batch_size") or {}).get("mean", "-")),
            f"{handle} ({inference})" if inference is not None else str(handle), statuses]


def percentile_cell(level: LevelResult, key: str) -> str:
    value = f"{level.latency_ms.get(key, 0):.3f}"
    return value + "*" if level.requests_ok < min_samples(key) else value


def markdown(result: BenchResult, summary: dict[str, Any]) -> str:
    keys = [key for key in (result.levels[0].latency_ms if result.levels else {}) if key.startswith("p")]
    headers = ["level", "req/s", *[f"{key} ms" for key in keys], "ok", "errors", "stable"]
    lines = [f"# {title(result, summary['created'])}", "",
             f"Target {result.url}; launchkit {summary['version']}, git {summary['git_revision'] or '-'}, "
             f"{summary['created']}.", ""]
    if result.interrupted:
        lines += [f"**Stopped by {result.interrupted}**: the figures are what was measured until then; the last "
                  "level is partial.", ""]
    lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    small = False
    for level in result.levels:
        errors = ", ".join(f"{k}: {v}" for k, v in {**{s: c for s, c in level.statuses.items()
                                                       if not s.startswith("2")}, **level.errors}.items()) or "0"
        stable = "-" if level.stable is None else ("yes" if level.stable else "no")
        cells = [percentile_cell(level, key) for key in keys]
        small = small or any(cell.endswith("*") for cell in cells)
        lines.append("| " + " | ".join([level.level + (" (partial)" if level.interrupted else ""),
                                        f"{level.throughput:.1f}", *cells, str(level.requests_ok), errors,
                                        stable]) + " |")
    if small:
        lines += ["", "\\* fewer samples than this percentile needs (pNN needs about 100/(100-NN): p99.9 needs 1,000): "
                  "the figure is the largest latency or close to it, not a tail estimate."]
    rate_levels = [level for level in result.levels if level.rate is not None]
    if rate_levels:
        lines += ["", "Open loop: latency from the intended send time (coordinated omission corrected); "
                  "uncorrected p99 from the actual send.", "",
                  "| level | achieved rate | late sends | p99 corrected ms | p99 uncorrected ms |", "|---|---|---|---|---|"]
        for level in rate_levels:
            lines.append(f"| {level.level} | {level.achieved_rate} | {level.late_sends} | "
                         f"{level.latency_ms.get('p99', 0):.3f} | {(level.uncorrected_latency_ms or {}).get('p99', 0):.3f} |")
    failing = [level for level in result.levels if level.error_bodies]
    if failing:
        lines += ["", "## Failed requests", ""]
        for level in failing:
            for status, bodies in level.error_bodies.items():
                lines += [f"- {level.level}, status {status} (first of {level.statuses.get(status, '?')}):", "",
                          "  ```", "  " + bodies[0].strip()[:1000].replace("\n", "\n  "), "  ```"]
    viewed = [level for level in result.levels if level.server_view]
    if viewed:
        lines += ["", "## Server-side view", "", "The server's /metrics over each level. \"< X\": the estimate falls "
                  "in the histogram's first bucket, so only its bound is known.", "",
                  "| " + " | ".join(SERVER_VIEW_HEADERS) + " |", "|" + "---|" * len(SERVER_VIEW_HEADERS)]
        lines += ["| " + " | ".join(server_view_row(level)) + " |" for level in viewed]
    if result.server:
        lines += ["", "## Server settings as applied", "", "Read back from the server's management API.", "",
                  "| setting | value |", "|---|---|"]
        for key, value in result.server.items():
            if key in ("workers", "jobQueueStatus"):
                continue
            lines.append(f"| {key} | {json.dumps(value) if isinstance(value, (dict, list)) else value} |")
        lines += ["", "| worker | CPUs | threads | OpenMP wait | memory MiB | status |", "|---|---|---|---|---|---|"]
        for worker in result.server.get("workers", []):
            memory = worker.get("memoryUsage")
            lines.append(f"| {worker.get('id')} | {_cpus(worker.get('cores'))} | {worker.get('threads')} | "
                         f"{worker.get('ompWaitPolicy')} | {memory / 2**20:.0f} | {worker.get('status')} |"
                         if memory else f"| {worker.get('id')} | {_cpus(worker.get('cores'))} | "
                         f"{worker.get('threads')} | {worker.get('ompWaitPolicy')} | - | {worker.get('status')} |")
    for note in result.notes:
        lines += ["", f"Note: {note}"]
    lines += ["", "## Columns", ""] + [f"- **{name}**: {meaning}" for name, meaning in COLUMNS.items()]
    lines += ["", "Plots: latency.png, latency_over_time.png" + (", sweep.png" if len(result.levels) > 1 else "")
              + (f"; the server's log: {Path(result.server_log).name}" if result.server_log else "")]
    return "\n".join(lines) + "\n"


def _cpus(cores: Any) -> str:
    if not cores:
        return "-"
    from launchkit.core.cpulist import format_cpu_list

    return format_cpu_list(cores)


def plot(result: BenchResult, folder: Path, created: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    heading = title(result, created).removeprefix("launchkit bench: ")
    levels = sorted(result.levels, key=lambda level: (level.rate or 0, level.concurrency or 0))
    keys = [key for key in (levels[0].latency_ms if levels else {}) if key.startswith("p")]

    figure, axis = plt.subplots(figsize=(9, 4.8))
    for level in levels:
        axis.plot(keys, [level.latency_ms.get(key, 0) for key in keys], marker="o", label=level.level)
    axis.set(xlabel="percentile", ylabel="latency (ms)", title=f"Latency percentiles per level\n{heading}")
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    _legend_outside(axis)
    written.append(_save(figure, folder / "latency.png"))

    if len(levels) > 1:
        x = [float(level.rate if level.rate is not None else level.concurrency or 0) for level in levels]
        figure, throughput_axis = plt.subplots(figsize=(9, 4.8))
        throughput_axis.plot(x, [level.throughput for level in levels], marker="o", color="tab:blue",
                             label="throughput (req/s)")
        throughput_axis.set(xlabel="target rate (req/s)" if levels[0].rate is not None else "concurrency",
                            ylabel="throughput (req/s)", title=f"Throughput and latency across the sweep\n{heading}")
        throughput_axis.set_ylim(bottom=0)
        if levels[0].rate is None:  # concurrency levels are whole numbers
            from matplotlib.ticker import MaxNLocator

            throughput_axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        latency_axis = throughput_axis.twinx()
        for key, style, marker, colour in (("p50", "--", "s", "tab:green"), ("p99", ":", "^", "tab:red")):
            latency_axis.plot(x, [level.latency_ms.get(key, 0) for level in levels], style, marker=marker,
                              color=colour, label=f"{key} latency (ms)")
        latency_axis.set_ylabel("latency (ms)")
        latency_axis.set_ylim(bottom=0)
        handles = throughput_axis.get_legend_handles_labels()[0] + latency_axis.get_legend_handles_labels()[0]
        throughput_axis.legend(handles, [str(h.get_label()) for h in handles], fontsize="small", loc="upper left",
                               bbox_to_anchor=(1.12, 1.0), borderaxespad=0)
        throughput_axis.grid(alpha=0.3)
        written.append(_save(figure, folder / "sweep.png"))

    figure, axis = plt.subplots(figsize=(9, 4.8))
    for level in levels:
        if level.timeline:
            axis.plot([t for t, _ in level.timeline], [v for _, v in level.timeline], label=level.level)
    axis.set(xlabel="seconds since the level started", ylabel="median latency (ms)",
             title=f"Latency over time\n{heading}")
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    _legend_outside(axis)
    written.append(_save(figure, folder / "latency_over_time.png"))
    return written


def _legend_outside(axis: Any) -> None:
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path


def write_report(result: BenchResult, folder: Path, argv: list[str] | None = None) -> dict[str, Any]:
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    summary = summary_dict(result, argv or sys.argv)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    rows = long_rows(result.levels)
    with open(folder / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["level", "concurrency", "rate", "metric", "value"])
        writer.writeheader()
        writer.writerows(rows)
    (folder / "report.md").write_text(markdown(result, summary))
    if result.levels:
        plot(result, folder, summary["created"])
    return summary
