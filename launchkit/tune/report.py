"""A tune run's report: the verdict, every trial (CSV and Markdown), the plot with the Pareto front
and the budget, summary.json, and best/ (config.properties and the `launchkit serve` command)."""

from __future__ import annotations

import csv
import json
import logging
import platform
import shlex
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from launchkit.tune.runner import TuneResult
from launchkit.tune.search import Constraints, Trial, TrialStatus, closest, pareto_front
from launchkit.tune.space import ServingConfig, config_properties

logger = logging.getLogger(__name__)

CSV_COLUMNS = ("trial", "workers", "cores_per_worker", "streams", "batch_size", "delay_ms", "variant", "allocator",
               "omp_runtime", "omp_wait", "status", "concurrency", "throughput_rps", "p50_ms", "p99_ms", "budget_ms",
               "memory_mib", "seconds", "reused_server", "confirmed", "error")


def verdict(result: TuneResult) -> str:
    """One line: the best configuration against the default, or the closest when none qualifies."""
    constraints = result.request.constraints
    best = result.best()
    if best is None:
        near = closest(result.trials, constraints)
        if near is None or near.chosen is None:
            return "no configuration could be measured (see the errors in trials.csv)"
        return (f"no configuration meets the constraints; closest: {near.config.label()} — "
                f"{near.chosen.throughput_rps:,.1f} req/s at {constraints.key} "
                f"{near.chosen.percentile_ms(constraints):.2f} ms ({near.status})")
    chosen = best.chosen
    assert chosen is not None
    budget = f" ≤ {constraints.latency_budget_ms:g} ms" if constraints.latency_budget_ms is not None else ""
    default = result.default
    if default is not None and default.feasible and default.chosen is not None and default is not best:
        versus = f" — {chosen.throughput_rps / default.chosen.throughput_rps:.2f}× the default configuration's throughput"
    elif default is best:
        versus = " — the default configuration is the best found"
    else:
        versus = " — the default configuration does not meet the constraints"
    return (f"best: {best.config.label()}{versus}: {chosen.throughput_rps:,.1f} req/s at c={chosen.concurrency}, "
            f"{constraints.key} {chosen.percentile_ms(constraints):.2f} ms{budget}")


def serve_command(result: TuneResult, config: ServingConfig) -> str:
    archive = result.archives.get(config.variant, result.archive).resolve()
    return shlex.join(["launchkit", "serve", str(archive), *config.serve_args()])


def _trial_summary(trial: Trial | None, constraints: Constraints) -> dict[str, Any] | None:
    if trial is None:
        return None
    row = trial.to_dict(constraints)
    row.pop("levels")
    return row


def write_report(result: TuneResult, folder: Path) -> dict[str, Any]:
    constraints = result.request.constraints
    best = result.best()
    summary: dict[str, Any] = {
        "command": "launchkit tune", "model": result.model, "archive": str(result.archive.resolve()),
        "machine": {"host": platform.node(), "cpus": result.space.cpus, "python": platform.python_version()},
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "request": asdict(result.request),
        "space": {attribute: list(values) for attribute, values in result.space.values},
        "variants": {name: asdict(info) for name, info in result.variants.items()}, "verdict": verdict(result),
        "default": _trial_summary(result.default, constraints), "best": _trial_summary(best, constraints),
        "closest": _trial_summary(closest(result.trials, constraints), constraints) if best is None else None,
        "interrupted": result.interrupted, "time_up": result.time_up, "elapsed_s": round(result.elapsed_s, 1),
        "trials": [trial.to_dict(constraints) for trial in result.trials],
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    _write_csv(result, folder / "trials.csv")
    plotted = True
    try:
        _write_plot(result, folder / "tune.png")
    except ImportError as error:  # a machine without matplotlib still gets every figure, in the other files
        logger.warning("tune.png not written: %s (pip install matplotlib)", error)
        plotted = False
    if best is not None:
        _write_best(result, best, folder / "best")
    (folder / "report.md").write_text(_markdown(result, summary, plotted))
    return summary


def _row(index: int, trial: Trial, constraints: Constraints) -> dict[str, Any]:
    chosen = trial.chosen
    return {"trial": index, **trial.config.to_dict(), "status": trial.status,
            "concurrency": chosen.concurrency if chosen else "",
            "throughput_rps": round(chosen.throughput_rps, 2) if chosen else "",
            "p50_ms": round(chosen.latency_ms.get("p50", 0.0), 3) if chosen else "",
            "p99_ms": round(chosen.latency_ms.get("p99", 0.0), 3) if chosen else "",
            "budget_ms": round(chosen.percentile_ms(constraints), 3) if chosen else "",
            "memory_mib": round(trial.memory_mib, 1) if trial.memory_mib is not None else "",
            "seconds": round(trial.seconds, 1), "reused_server": trial.reused_server,
            "confirmed": trial.confirmed is not None, "error": trial.error or ""}


def _write_csv(result: TuneResult, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_COLUMNS)
        writer.writeheader()
        for index, trial in enumerate(result.trials, 1):
            writer.writerow(_row(index, trial, result.request.constraints))


def _write_plot(result: TuneResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    constraints = result.request.constraints
    measured = [trial for trial in result.trials if trial.chosen is not None]
    figure, axes = plt.subplots(figsize=(8, 5))
    for status, colour in ((TrialStatus.OK, "tab:blue"), (TrialStatus.OVER_BUDGET, "tab:red"),
                           (TrialStatus.BELOW_MIN_THROUGHPUT, "tab:orange"), (TrialStatus.OVER_MEMORY, "tab:purple"),
                           (TrialStatus.FAILED, "grey")):
        points = [t for t in measured if t.status is status]
        if points:
            axes.scatter([t.chosen.percentile_ms(constraints) for t in points],  # type: ignore[union-attr]
                         [t.chosen.throughput_rps for t in points], c=colour, label=status, alpha=0.7)  # type: ignore[union-attr]
    front = pareto_front(measured, constraints)
    if front:
        axes.plot([t.chosen.percentile_ms(constraints) for t in front],  # type: ignore[union-attr]
                  [t.chosen.throughput_rps for t in front], "k--", linewidth=1, label="Pareto front")  # type: ignore[union-attr]
    if constraints.latency_budget_ms is not None:
        axes.axvline(constraints.latency_budget_ms, color="tab:red", linestyle=":", label="latency budget")
    for trial, name in ((result.default, "default"), (result.best(), "best")):
        if trial is not None and trial.chosen is not None:
            axes.annotate(name, (trial.chosen.percentile_ms(constraints), trial.chosen.throughput_rps),
                          textcoords="offset points", xytext=(6, 6))
    axes.set_xlabel(f"{constraints.key} latency (ms) at the chosen concurrency")
    axes.set_ylabel("throughput (req/s)")
    axes.set_title(f"launchkit tune: {result.model} ({len(result.trials)} configurations)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _write_best(result: TuneResult, best: Trial, folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    archive = result.archives.get(best.config.variant, result.archive)
    (folder / "config.properties").write_text(config_properties(best.config, result.model, archive))
    (folder / "serve-command.txt").write_text(serve_command(result, best.config) + "\n")


def _markdown(result: TuneResult, summary: dict[str, Any], plotted: bool = True) -> str:
    constraints = result.request.constraints
    lines = [f"# launchkit tune: {result.model}", "", f"**{summary['verdict']}**", ""]
    if result.interrupted:
        lines += [f"Stopped by {result.interrupted}: the search is incomplete (continue it with --resume).", ""]
    elif result.time_up:
        lines += ["The time limit ended the search (continue it with --resume, or give more --max-time).", ""]
    if summary["best"]:
        lines += ["Serve it: `launchkit serve --ts-config best/config.properties`, or", "",
                  f"    {serve_command(result, result.best().config)}", ""]  # type: ignore[union-attr]
    lines += [f"| # | configuration | status | c | req/s | {constraints.key} ms | MiB |", "|---|---|---|---|---|---|---|"]
    for index, trial in enumerate(result.trials, 1):
        chosen = trial.chosen
        lines.append(f"| {index} | {trial.config.label()}{' (confirmed)' if trial.confirmed else ''} | {trial.status} | {chosen.concurrency if chosen else ''} | "
                     f"{f'{chosen.throughput_rps:,.1f}' if chosen else ''} | "
                     f"{f'{chosen.percentile_ms(constraints):.2f}' if chosen else ''} | "
                     f"{f'{trial.memory_mib:.0f}' if trial.memory_mib is not None else ''} |")
    variants = ", ".join(f"{name}: {'accepted' if info.accepted else 'refused'} ({info.reason})"
                         for name, info in result.variants.items())
    lines += ["", f"Optimization variants: {variants}", "", 
              *(["![throughput vs latency](tune.png)"] if plotted else []), ""]
    return "\n".join(lines)
