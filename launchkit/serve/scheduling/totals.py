"""Running totals of one model version for Triton's statistics extension and TorchServe's counters.

Kept the way the histograms are (see :mod:`launchkit.serve.scheduling.model_metrics`): a batch's figures are
appended to a list on the hot path (one append) and folded into sums when someone reads them, or
when a few thousand are pending. Request counts, latency and queue sums come from the histograms
and status counters the server keeps anyway; only failed requests' seconds are added here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

FOLD_EVERY = 4096


@dataclass
class Totals:
    """What the readers see (after :meth:`RunningTotals.read`)."""

    ok: int = 0
    ok_seconds: float = 0.0
    failed: int = 0
    failed_seconds: float = 0.0
    queued: int = 0
    queue_seconds: float = 0.0
    batches: int = 0
    rows: int = 0
    last_at: float = 0.0  # wall clock of the last answer
    last_handle_seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)  # per row: a batch's time × its size
    batch_sizes: dict[int, tuple[int, float]] = field(default_factory=dict)  # size → (batches, handler seconds)
    stream_batches: dict[tuple[str, int], int] = field(default_factory=dict)  # (worker, stream) → batches


class RunningTotals:
    __slots__ = ("pending", "failed_seconds", "_folded", "_lock")

    def __init__(self) -> None:
        # (timings, batch size, worker, wall clock) per batch; ModelMetrics.batch_done appends
        self.pending: list[tuple[dict[str, float], int, str, float]] = []
        self.failed_seconds = 0.0
        self._folded = Totals()
        self._lock = threading.Lock()  # the event loop appends; a scrape may read from another thread

    def fold(self) -> None:
        with self._lock:
            pending, self.pending = self.pending, []
            totals = self._folded
            for timings, size, worker, at in pending:
                totals.batches += 1
                totals.last_at = at
                totals.rows += size
                handle = timings.get("handle", 0.0)
                count, seconds = totals.batch_sizes.get(size, (0, 0.0))
                totals.batch_sizes[size] = (count + 1, seconds + handle)
                totals.last_handle_seconds = handle
                for stage in ("preprocess", "inference", "postprocess", "handle"):
                    if stage in timings:
                        totals.stage_seconds[stage] = totals.stage_seconds.get(stage, 0.0) + timings[stage] * size
                if "stream" in timings:  # a multi-stream worker: batches per stream
                    key = (worker, int(timings["stream"]))
                    totals.stream_batches[key] = totals.stream_batches.get(key, 0) + 1

    def read(self, by_code: dict[int, int], latency: Any, queue_wait: Any) -> Totals:
        """Everything so far; ``latency`` and ``queue_wait``: the model's BufferedHistograms."""
        self.fold()
        totals = self._folded
        latency_buckets, latency_total = latency.buckets()
        queue_buckets, queue_total = queue_wait.buckets()
        totals.failed = sum(count for code, count in by_code.items() if code >= 400)
        totals.ok = latency_buckets[-1][1] - totals.failed
        totals.failed_seconds = self.failed_seconds
        totals.ok_seconds = max(0.0, latency_total - self.failed_seconds)
        totals.queued, totals.queue_seconds = queue_buckets[-1][1], queue_total
        return totals
