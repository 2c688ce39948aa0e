"""What the server counts for one model version: the state behind /metrics, Triton's statistics and
TorchServe's counters, kept where the registry, the fleet and the loading code can name its type.

Cost per request matters here (a tiny model's request takes well under a millisecond of CPU):
prometheus_client's Histogram takes a lock and scans its buckets on every observation, several
times per request. So observations are appended to a list and bucketed in bulk (a C bisect per
value) when Prometheus scrapes or when a few thousand are pending; benchmarks/ops.py measures what
metrics cost a request. (Bucketing with numpy would put numpy into the frontend process, which
does not otherwise import it.) Histograms, unlike TorchServe's cumulative-microsecond counters,
give percentiles. Buckets run from 100 µs to 2 min so that a sub-millisecond model and a
multi-second one both land in the middle of the range, six per decade. The Prometheus side
(collectors, the text format) is serve/api/metrics.py.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from itertools import accumulate
from typing import Any, Protocol

from launchkit.serve.scheduling.totals import FOLD_EVERY, RunningTotals, Totals

# 1-1.5-2-3-5-7 in every decade from 100 µs to 2 min: a percentile estimated inside one bucket
# is off by at most about a fifth, for a 0.3 ms model as for a 30 s one.
SECONDS_BUCKETS = tuple(round(step * 10.0**exponent, 6) for exponent in range(-4, 2)
                        for step in (1, 1.5, 2, 3, 5, 7)) + (100.0, 120.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
STAGES = ("preprocess", "inference", "postprocess", "handle")
FLUSH_EVERY = 4096


class BufferedHistogram:
    """A histogram whose observations are bucketed in bulk (see the module's docstring)."""

    __slots__ = ("bounds", "counts", "total", "pending", "_lock")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = tuple(float(bound) for bound in bounds)
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.total = 0.0
        self.pending: list[float] = []
        self._lock = threading.Lock()  # the event loop observes; a scrape may run in another thread

    def observe(self, value: float) -> None:
        pending = self.pending
        pending.append(value)
        if len(pending) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self.pending = self.pending, []
            counts, bounds = self.counts, self.bounds
            for value in pending:
                counts[bisect_left(bounds, value)] += 1  # bounds[i-1] < v <= bounds[i]: Prometheus' "le"
            self.total += sum(pending)

    def buckets(self) -> tuple[list[tuple[str, float]], float]:
        self.flush()
        labels = [repr(bound) for bound in self.bounds] + ["+Inf"]
        return list(zip(labels, accumulate(self.counts))), self.total


class HandlerMetrics:
    """The metrics one model's handler emitted: (type, name, dimension names) → dimension values → value."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.families: dict[tuple[str, str, tuple[str, ...]], dict[tuple[str, ...], Any]] = {}
        self.units: dict[tuple[str, str, tuple[str, ...]], str] = {}
        self._lock = threading.Lock()  # updates come on the event loop; a scrape may run in another thread

    def apply(self, updates: list[Any]) -> None:
        with self._lock:
            for name, unit, kind, names, values, value in updates:
                key = (kind, name, tuple(names))
                samples = self.families.setdefault(key, {})
                self.units[key] = unit
                if kind == "counter":
                    samples[values] = samples.get(values, 0.0) + value
                elif kind == "gauge":
                    samples[values] = value
                else:
                    count, total = samples.get(values, (0, 0.0))
                    samples[values] = (count + 1, total + value)

    def snapshot(self) -> list[tuple[str, str, tuple[str, ...], str, dict[tuple[str, ...], Any]]]:
        with self._lock:
            return [(kind, name, names, self.units[(kind, name, names)], dict(samples))
                    for (kind, name, names), samples in self.families.items()]


class ModelMetrics:
    """Counters and histograms of one model version."""

    def __init__(self, name: str, version: str) -> None:
        self.labels = [name, version]
        self.by_code: dict[int, int] = {}
        self.latency = BufferedHistogram(SECONDS_BUCKETS)
        self.queue_wait = BufferedHistogram(SECONDS_BUCKETS)
        self.batch_size = BufferedHistogram(BATCH_BUCKETS)
        self.stages = {stage: BufferedHistogram(SECONDS_BUCKETS) for stage in STAGES}
        self.running = RunningTotals()
        self.handler_metrics = HandlerMetrics(name)

    @property
    def totals(self) -> Totals:
        """Counts and sums so far (Triton's statistics, TorchServe's counters): folded when read."""
        return self.running.read(self.by_code, self.latency, self.queue_wait)

    def request_done(self, status: int, seconds: float) -> None:
        self.by_code[status] = self.by_code.get(status, 0) + 1
        self.latency.observe(seconds)
        if status >= 400:
            self.running.failed_seconds += seconds

    def batch_sent(self, waits: list[float]) -> None:
        self.batch_size.observe(len(waits))
        for wait in waits:
            self.queue_wait.observe(wait)

    def batch_done(self, timings: dict[str, float], size: int = 1, handler_updates: list[Any] | None = None,
                   worker: str = "") -> None:
        for stage, seconds in timings.items():
            histogram = self.stages.get(stage)
            if histogram is not None:
                histogram.observe(seconds)
        pending = self.running.pending  # folded when read (totals.py): one append here
        pending.append((timings, size, worker, time.time()))
        if len(pending) >= FOLD_EVERY:
            self.running.fold()
        if handler_updates:
            self.handler_metrics.apply(handler_updates)


class KeepsMetrics(Protocol):
    """What loading asks of the server's metrics: one ModelMetrics per model version."""

    def for_model(self, model: Any) -> ModelMetrics: ...
