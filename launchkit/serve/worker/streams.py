"""A multi-stream worker: one process, one copy of the model's weights, K batches at once.

Each stream is a pinned thread (:class:`launchkit.runtime.Task`) on its share of the worker's
cores, with its own OpenMP team, its own copy of the handler object (the copies share the
model: ``copy.copy`` keeps attributes by reference) and its own context (request ids, statuses
and metrics are per batch). The frontend sends a worker at most K batches at once (its batcher
sees K slots); each result goes back with the batch's id as soon as its stream is done.
Work that releases the GIL (TorchScript, frozen or compiled graphs) runs on all streams at once.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable

from launchkit.runtime import CPUPool, Task
from launchkit.serve.wire import BatchResult, error_result

logger = logging.getLogger("launchkit.serve.worker")


class Streams:
    def __init__(self, worker: Any, count: int, send: Callable[[tuple[Any, ...]], None]) -> None:
        cpus = CPUPool().core_ids  # the worker's cores (LAUNCHKIT_CPUS: OpenMP may have bound this thread to one)
        if count > len(cpus):
            logger.warning("%d streams asked for on %d core(s): running %d, one per core", count, len(cpus), len(cpus))
            count = len(cpus)
        self.pools = CPUPool(cpus).split(count)
        self.workers = [worker] + [worker.replica() for _ in range(count - 1)]
        self.tasks = [Task(stream_worker.run_batch, pool) for stream_worker, pool in zip(self.workers, self.pools)]
        self.free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(count):
            self.free.put(index)
        self._send = send
        self._lock = threading.Lock()  # streams finish on their own threads; frames must not interleave

    def describe(self) -> list[dict[str, Any]]:
        return [{"stream": index, "cpus": pool.core_ids} for index, pool in enumerate(self.pools)]

    def submit(self, batch_id: int, items: list[Any]) -> None:
        index = self.free.get()  # the frontend never sends more batches than streams
        future = self.tasks[index](items)
        future.add_done_callback(lambda done: self._finished(index, batch_id, len(items), done))

    def _finished(self, index: int, batch_id: int, count: int, done: Any) -> None:
        try:
            results, timings, updates = done.result()
        except Exception as error:  # noqa: BLE001 - the stream stays up for the next batch
            logger.exception("a batch failed outside the handler (stream %d)", index)
            message = f"the worker could not run the batch: {type(error).__name__}: {str(error)[:200]}"
            results, timings, updates = [error_result(500, "InternalServerException", message)] * count, {}, []
        timings["stream"] = float(index)
        with self._lock:
            self._send(BatchResult("result", batch_id, results, timings, updates))
        self.free.put(index)
