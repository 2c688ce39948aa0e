"""The CI gate: compare a run's summary.json with a baseline and fail on regressions.

``--fail-on throughput=-5%,p99=+10%`` fails when throughput drops by more than 5% or p99 grows
by more than 10%, at any level present in both runs. ``worker_cpu`` and ``frontend_cpu`` (CPU
milliseconds per request of the server's workers and frontend, measured when bench started the
server), and the server's own mean time per batch of each handler stage (``preprocess``,
``inference``, ``postprocess``, ``handle``) leave out the HTTP stack and the load generator, which
carry most of req/s's and client latency's swings; scripts/perf-gate.sh says which one a shared
runner's gate was judged on, and why. Exit status 3 means "regressed" (2 stays
"bad usage"), so a CI job can tell a slower build from a broken command.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launchkit.core.errors import Regression, UsageError

DEFAULT_FAIL_ON = "throughput=-5%,p99=+10%"
STAGE_METRICS = ("preprocess", "inference", "postprocess", "handle")  # the server's per-batch means
CPU_METRICS = {"worker_cpu": "worker_cpu_ms_per_request", "frontend_cpu": "frontend_cpu_ms_per_request"}


@dataclass(frozen=True)
class Threshold:
    metric: str  # "throughput" or a latency key such as "p99"
    limit_percent: float  # negative: may drop at most this much; positive: may grow at most this much


@dataclass(frozen=True)
class Comparison:
    level: str
    metric: str
    baseline: float
    current: float
    change_percent: float
    limit_percent: float | None
    regressed: bool


def parse_fail_on(text: str) -> list[Threshold]:
    thresholds = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        match = re.fullmatch(r"([a-z0-9._]+)\s*=\s*([+-]?\d+(?:\.\d+)?)%", item)
        if not match:
            raise UsageError(f"--fail-on {item!r}: expected METRIC=+N% or METRIC=-N%, e.g. throughput=-5%,p99=+10%")
        metric, limit = match.group(1), float(match.group(2))
        known = ("throughput", *STAGE_METRICS, *CPU_METRICS)
        if metric not in known and not re.fullmatch(r"p\d+(?:\.\d+)?|mean|min|max", metric):
            raise UsageError(f"--fail-on {item!r}: unknown metric {metric!r}; known: throughput, a latency (p50, p99, "
                             f"p99.9, mean, min, max), {', '.join(STAGE_METRICS + tuple(CPU_METRICS))}")
        if metric == "throughput" and limit > 0 or metric != "throughput" and limit < 0:
            raise UsageError(f"--fail-on {item!r}: throughput limits are drops (-N%), latency limits are rises (+N%)")
        thresholds.append(Threshold(metric, limit))
    return thresholds


def load_summary(path: str | Path) -> dict[str, Any]:
    file = Path(path)
    if file.is_dir():
        file = file / "summary.json"
    try:
        data = json.loads(file.read_text())
    except OSError as error:
        raise UsageError(f"{path}: {error.strerror} (expected a summary.json or a report folder)") from None
    except ValueError as error:
        raise UsageError(f"{file}: not valid JSON ({error})") from None
    if "levels" not in data:
        raise UsageError(f"{file}: not a launchkit bench summary (no 'levels')")
    return data


def _value(level: dict[str, Any], metric: str) -> float | None:
    if metric == "throughput":
        return level.get("throughput")
    if metric in CPU_METRICS:  # measured when bench started the server (see runner._ServerView)
        return (level.get("server_view") or {}).get(CPU_METRICS[metric])
    if metric in STAGE_METRICS:  # the server's own mean time per batch of a handler stage, from its /metrics
        return ((level.get("server_view") or {}).get("handler_ms") or {}).get(metric, {}).get("mean")
    return (level.get("latency_ms") or {}).get(metric)


def compare(baseline: dict[str, Any], current: dict[str, Any], thresholds: list[Threshold]) -> list[Comparison]:
    base_levels = {level["level"]: level for level in baseline["levels"]}
    common = [level for level in current["levels"] if level["level"] in base_levels]
    if not common:
        raise UsageError("the two runs have no level in common (compare the same --concurrency/--rate levels)")
    limits = {threshold.metric: threshold.limit_percent for threshold in thresholds}
    metrics = ["throughput", "p50", "p99", *[m for m in limits if m not in ("throughput", "p50", "p99")]]
    rows = []
    for level in common:
        for metric in metrics:
            old, new = _value(base_levels[level["level"]], metric), _value(level, metric)
            if old is None or new is None:
                continue
            change = (new - old) / old * 100 if old else 0.0
            limit = limits.get(metric)
            regressed = limit is not None and (change < limit if limit < 0 else change > limit)
            rows.append(Comparison(level["level"], metric, old, new, round(change, 2), limit, regressed))
    return rows


def raise_on_regression(rows: list[Comparison]) -> None:
    """Regression (the CLI's exit status 3) when any row regressed beyond its threshold."""
    bad = [row for row in rows if row.regressed]
    if bad:
        worst = ", ".join(f"{row.level} {row.metric} {row.change_percent:+.1f}% (limit {row.limit_percent:+g}%)"
                          for row in bad)
        raise Regression(f"performance regressed beyond the thresholds: {worst}")
