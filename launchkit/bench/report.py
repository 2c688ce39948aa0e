"""Report files of a run: summary.json, results.csv (long format), report.md and PNG plots.

summary.json holds everything needed to compare runs later: tool version, git revision, the
command line, the machine (``launchkit info``), the server settings as applied, every level.
Plots are drawn with matplotlib's Agg backend, levels sorted (benchmark-ab.py's were not).
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
from launchkit.bench.runner import BenchResult
from launchkit.bench.stats import LevelResult


def _git_revision() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              check=True).stdout.strip() or None
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


def summary_dict(result: BenchResult, argv: list[str]) -> dict[str, Any]:
    config = asdict(result.config)
    return {
        "tool": "launchkit bench",
        "version": __version__,
        "git_revision": _git_revision(),
        "command": argv,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "url": result.url,
        "machine": _machine(),
        "config": config,
        "server": result.server,
        "levels": [level.to_dict() for level in result.levels],
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
        return f"{part.get(first, '-')} / {part.get(second, '-')}"

    handler = view.get("handler_ms", {})
    inference = handler.get("inference", {}).get("mean")
    handle = handler.get("handle", {}).get("mean", "-")
    statuses = ", ".join(f"{code}: {count}" for code, count in sorted(view.get("requests_by_status", {}).items()))
    return [level.level, pair("latency_ms", "p50", "p99"), pair("queue_wait_ms", "mean", "p99"),
            str((view.get("batch_size") or {}).get("mean", "-")),
            f"{handle} ({inference})" if inference is not None else str(handle), statuses]


def markdown(result: BenchResult, summary: dict[str, Any]) -> str:
    percentile_keys = [key for key in (result.levels[0].latency_ms if result.levels else {}) if key.startswith("p")]
    headers = ["level", "req/s", *[f"{key} ms" for key in percentile_keys], "ok", "errors", "stable"]
    lines = [f"# launchkit bench: {result.url}", "",
             f"launchkit {summary['version']}, git {summary['git_revision'] or '-'}, {summary['created']}", "",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for level in result.levels:
        errors = ", ".join(f"{k}: {v}" for k, v in {**{s: c for s, c in level.statuses.items()
                                                       if not s.startswith("2")}, **level.errors}.items()) or "0"
        stable = "-" if level.stable is None else ("yes" if level.stable else "no")
        lines.append("| " + " | ".join([level.level, f"{level.throughput:.1f}",
                                        *[f"{level.latency_ms.get(k, 0):.3f}" for k in percentile_keys],
                                        str(level.requests_ok), errors, stable]) + " |")
    rate_levels = [level for level in result.levels if level.rate is not None]
    if rate_levels:
        lines += ["", "Open loop: latency from the intended send time (coordinated omission corrected); "
                  "uncorrected p99 from the actual send.", "",
                  "| level | achieved rate | late sends | p99 corrected ms | p99 uncorrected ms |", "|---|---|---|---|---|"]
        for level in rate_levels:
            lines.append(f"| {level.level} | {level.achieved_rate} | {level.late_sends} | "
                         f"{level.latency_ms.get('p99', 0):.3f} | {(level.uncorrected_latency_ms or {}).get('p99', 0):.3f} |")
    viewed = [level for level in result.levels if level.server_view]
    if viewed:
        lines += ["", "Server-side view (the server's /metrics over each level; p50/p99 estimated from histogram "
                  "buckets, means exact):", "", "| " + " | ".join(SERVER_VIEW_HEADERS) + " |",
                  "|" + "---|" * len(SERVER_VIEW_HEADERS)]
        lines += ["| " + " | ".join(server_view_row(level)) + " |" for level in viewed]
    if result.server:
        lines += ["", "Server settings as applied: " + json.dumps({k: v for k, v in result.server.items()
                                                                  if k != "workers"})]
        for worker in result.server.get("workers", []):
            lines.append(f"- worker {worker.get('id')}: CPUs {worker.get('cores')}, threads {worker.get('threads')}, "
                         f"OpenMP wait {worker.get('ompWaitPolicy')}")
    lines += ["", "Plots: latency.png, latency_over_time.png" + (", sweep.png" if len(result.levels) > 1 else "")]
    return "\n".join(lines) + "\n"


def plot(result: BenchResult, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    levels = sorted(result.levels, key=lambda level: (level.rate or 0, level.concurrency or 0))
    keys = [key for key in (levels[0].latency_ms if levels else {}) if key.startswith("p")]

    figure, axis = plt.subplots(figsize=(8, 4.5))
    for level in levels:
        axis.plot(keys, [level.latency_ms.get(key, 0) for key in keys], marker="o", label=level.level)
    axis.set(xlabel="percentile", ylabel="latency (ms)", title="Latency percentiles per level")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    written.append(_save(figure, folder / "latency.png"))

    if len(levels) > 1:
        x = [level.rate if level.rate is not None else level.concurrency for level in levels]
        figure, throughput_axis = plt.subplots(figsize=(8, 4.5))
        throughput_axis.plot(x, [level.throughput for level in levels], marker="o", color="tab:blue",
                             label="throughput")
        throughput_axis.set(xlabel="target rate (req/s)" if levels[0].rate is not None else "concurrency",
                            ylabel="throughput (req/s)", title="Throughput and latency across the sweep")
        latency_axis = throughput_axis.twinx()
        for key, style in (("p50", "--"), ("p99", ":")):
            latency_axis.plot(x, [level.latency_ms.get(key, 0) for level in levels], style, marker="s",
                              color="tab:red", label=f"{key} latency")
        latency_axis.set_ylabel("latency (ms)")
        handles = throughput_axis.get_legend_handles_labels()[0] + latency_axis.get_legend_handles_labels()[0]
        throughput_axis.legend(handles, [h.get_label() for h in handles], fontsize="small", loc="upper left")
        throughput_axis.grid(alpha=0.3)
        written.append(_save(figure, folder / "sweep.png"))

    figure, axis = plt.subplots(figsize=(8, 4.5))
    for level in levels:
        if level.timeline:
            axis.plot([t for t, _ in level.timeline], [v for _, v in level.timeline], label=level.level)
    axis.set(xlabel="seconds since the level started", ylabel="median latency (ms)", title="Latency over time")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    written.append(_save(figure, folder / "latency_over_time.png"))
    return written


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path


def write_report(result: BenchResult, folder: Path, argv: list[str] | None = None) -> dict[str, Any]:
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    summary = summary_dict(result, argv or sys.argv)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    pd.DataFrame(long_rows(result.levels)).to_csv(folder / "results.csv", index=False)
    (folder / "report.md").write_text(markdown(result, summary))
    plot(result, folder)
    return summary
