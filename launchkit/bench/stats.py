"""Figures of one level of load, from the recorded samples: exact percentiles, throughput, errors.

Percentiles are numpy's (linear interpolation) over every recorded latency, in milliseconds at
microsecond precision — never bucketed, never whole milliseconds. Only 2xx responses have a
latency; every other status and every connection failure is an error (benchmark-ab.py counted
503s as successes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from launchkit.bench.loadgen import Samples

DEFAULT_PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


@dataclass(frozen=True)
class LevelResult:
    """One level (a concurrency or a rate) of a run, ready for tables and JSON."""

    level: str  # "c=8" or "rate=500/s"
    concurrency: int | None
    rate: float | None
    requests_ok: int
    requests_failed: int
    duration_s: float
    throughput: float  # 2xx responses per second
    latency_ms: dict[str, float]  # "p50", "p99", ..., "mean", "min", "max" (corrected in rate mode)
    uncorrected_latency_ms: dict[str, float] | None  # rate mode: from the actual send time
    statuses: dict[str, int]
    errors: dict[str, int]
    late_sends: int = 0
    achieved_rate: float | None = None  # rate mode: sends per second actually made
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, p50 ms) per window
    stable: bool | None = None
    server_view: dict[str, Any] | None = None  # a launchkit target's own view, from its /metrics
    error_bodies: dict[str, list[str]] = field(default_factory=dict)  # a few response bodies per non-2xx status
    interrupted: bool = False  # the run was stopped during this level: its figures are partial

    @property
    def error_rate(self) -> float:
        total = self.requests_ok + self.requests_failed
        return self.requests_failed / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile_key(percent: float) -> str:
    return f"p{percent:g}"


def latency_summary(latency_ns: list[int], percentiles: tuple[float, ...]) -> dict[str, float]:
    if not latency_ns:
        return {}
    import numpy as np

    values = np.asarray(latency_ns, dtype=np.float64) / 1e6
    summary = {percentile_key(p): round(float(v), 3) for p, v in zip(percentiles, np.percentile(values, percentiles))}
    summary.update(mean=round(float(values.mean()), 3), min=round(float(values.min()), 3),
                   max=round(float(values.max()), 3))
    return summary


def timeline(samples: Samples, windows: int = 40) -> list[tuple[float, float]]:
    """Median latency per time window: latency over time, for the plot."""
    if not samples.completed_at_ns:
        return []
    import numpy as np

    done = (np.asarray(samples.completed_at_ns, dtype=np.float64) - samples.started_ns) / 1e9
    latency = np.asarray(samples.latency_ns, dtype=np.float64) / 1e6
    edges = np.linspace(0.0, max(done.max(), 1e-6), windows + 1)
    index = np.clip(np.searchsorted(edges, done, side="right") - 1, 0, windows - 1)
    points = []
    for window in range(windows):
        chosen = latency[index == window]
        if chosen.size:
            points.append((round(float(edges[window + 1]), 3), round(float(np.median(chosen)), 3)))
    return points


def summarize(samples: Samples, concurrency: int | None, rate: float | None,
              percentiles: tuple[float, ...] = DEFAULT_PERCENTILES) -> LevelResult:
    duration = max((samples.ended_ns - samples.started_ns) / 1e9, 1e-9)
    level = f"rate={rate:g}/s" if rate is not None else f"c={concurrency}"
    return LevelResult(
        level=level,
        concurrency=concurrency,
        rate=rate,
        requests_ok=samples.ok,
        requests_failed=samples.failed,
        duration_s=round(duration, 3),
        throughput=round(samples.ok / duration, 2),
        latency_ms=latency_summary(samples.latency_ns, percentiles),
        uncorrected_latency_ms=latency_summary(samples.uncorrected_ns, percentiles) if rate is not None else None,
        statuses={str(status): count for status, count in sorted(samples.statuses.items())},
        errors=dict(sorted(samples.errors.items())),
        late_sends=samples.late_sends,
        achieved_rate=round(samples.sent / duration, 2) if rate is not None else None,
        timeline=timeline(samples),
        error_bodies={str(status): [body.decode("utf-8", "replace") for body in bodies]
                      for status, bodies in sorted(samples.error_bodies.items())},
    )


def windows_agree(values: list[float], tolerance: float) -> bool:
    """perf_analyzer's stability test: the last three windows within ±tolerance of their mean."""
    if len(values) < 3:
        return False
    last = values[-3:]
    mean = sum(last) / 3
    return mean > 0 and all(abs(value - mean) <= tolerance * mean for value in last)
