"""Dynamic batching: one queue per model version, batches handed to idle workers.

Semantics (documented in docs/serving.md, "Batching"):
* A request waits at most ``max_batch_delay`` counted from the arrival of the oldest waiting
  request — not from the moment a worker asks (TorchServe's behaviour, serve#2478).
* A batch goes out as soon as it is full, or when an idle worker would otherwise wait for
  requests that are not expected in time: the queue keeps an estimate of the arrival interval,
  and when ``batch_size - queued`` more arrivals would not come before the deadline, the
  partial batch goes now. So a lone request at low load does not pay the delay, and under load
  batches fill.
* A full queue (``job_queue_size``) and "no worker ready" are different 503s.
* A retiring worker (scale-down, replacement, unregister) gets no new batches while the model has
  an active worker; without one it keeps taking batches until the queue is empty, so requests
  already accepted are served, never dropped. It is told ``drained()`` when it is no longer needed.
* A worker with several streams (``capacity``) runs that many batches at once: it stands in the
  idle line once per free stream, and is drained only when all its streams are idle.
* A worker may also hold batches **ahead** (``ahead``, one for a single-stream worker): when no
  worker is idle, a *full* batch is sent to a busy worker, to wait in its socket and start the
  moment the batch it runs ends. Without it a worker idles between batches for the round trip
  through the frontend (its answer read, the next batch written, the process woken), which for a
  small model is longer than the model. Only full batches go ahead, so batching is unchanged: a
  partial batch waits in the queue for its rows or its deadline as before. The response timeout
  of a batch ahead starts when it starts (see ``WorkerProcess``), not while it waits.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol

from launchkit.core.errors import NoWorkerReady, QueueFull
from launchkit.serve.wire import ItemRequest, ItemResult, error_result


@dataclass(eq=False)
class Job:
    request: ItemRequest
    arrival: float
    future: asyncio.Future[ItemResult]


class WorkerSlot(Protocol):
    """What the batcher needs from a worker connection."""

    @property
    def ready(self) -> bool: ...  # takes new batches (the server's one readiness predicate)

    def send_batch(self, jobs: list[Job]) -> None: ...

    def drained(self) -> None: ...


def capacity(slot: WorkerSlot) -> int:
    """How many batches a slot runs at once (its streams); 1 unless it says otherwise."""
    return getattr(slot, "capacity", 1)


def ahead(slot: WorkerSlot) -> int:
    """How many full batches a slot may hold beyond those it runs; 0 unless it says otherwise."""
    return getattr(slot, "ahead", 0)


DispatchHook = Callable[[list[Job], float], None]
Timer = Callable[[float, Callable[[], None]], "asyncio.TimerHandle"]


class ModelQueue:
    def __init__(self, name: str, batch_size: int, max_batch_delay_ms: float, capacity: int,
                 on_dispatch: DispatchHook | None = None, clock: Callable[[], float] = time.monotonic,
                 call_later: Timer | None = None) -> None:
        """``clock`` and ``call_later`` (default: the running loop's) let a test drive time exactly."""
        self.name = name
        self.batch_size = batch_size
        self.delay = max_batch_delay_ms / 1000.0
        self.capacity = capacity
        self.queue: deque[Job] = deque()
        self.idle: deque[WorkerSlot] = deque()  # one entry per free stream
        self.ahead: deque[WorkerSlot] = deque()  # one entry per free place for a full batch ahead
        self.sent: dict[int, int] = {}  # by id(slot): batches each slot holds (running or ahead)
        self.members: list[WorkerSlot] = []  # slots that joined (worker_ready) and are not gone
        self.configured_workers = 1  # the workers the fleet was asked for (0: none is configured)
        self.retiring: set[WorkerSlot] = set()
        # slots whose process died while serving and is being restarted: requests queue for them rather
        # than get a 503 (a restart is a fraction of a second; the soak counts the 503s it used to give)
        self.returning: set[WorkerSlot] = set()
        self.on_dispatch = on_dispatch  # metrics: (jobs, now) for each batch sent
        self.last_error: str | None = None
        self._interval = 1.0  # EWMA of the time between arrivals, seconds
        self._last_arrival: float | None = None
        self._clock = clock
        self._call_later = call_later
        self._timer: asyncio.TimerHandle | None = None  # uvloop's handles have no when(): keep the due time
        self._timer_due = 0.0

    def has_ready_worker(self) -> bool:
        return any(slot.ready for slot in self.members)

    def can_queue(self) -> bool:
        """Requests are taken: a worker is ready, or one is on its way back."""
        return bool(self.returning) or self.has_ready_worker()

    # -- requests ----------------------------------------------------------------------------

    def submit(self, request: ItemRequest) -> asyncio.Future[ItemResult]:
        return self.submit_many([request])[0]

    def submit_many(self, requests: list[ItemRequest]) -> list[asyncio.Future[ItemResult]]:
        """Queue requests that arrived together (a v2 tensor's rows): they are dispatched as one burst."""
        if not self.can_queue():
            if self.configured_workers == 0 and not self.retiring:
                raise NoWorkerReady(f'model "{self.name}" has no worker configured (initial_workers=0 or '
                                    f"min_worker=0): give it one with PUT /models/{self.name}?min_worker=1")
            detail = f" (last worker error: {self.last_error})" if self.last_error else " (workers are starting)"
            raise NoWorkerReady(f'model "{self.name}" has no worker ready to serve requests{detail}')
        if len(self.queue) + len(requests) > self.capacity:
            raise QueueFull(
                f'model "{self.name}" queue is full ({self.capacity} requests waiting; job_queue_size); '
                "retry later or add workers"
            )
        now = self._clock()
        if self._last_arrival is not None:
            gap = now - self._last_arrival
            # After a pause longer than the delay a new burst starts: trust its first gap alone.
            self._interval = gap if gap > self.delay else 0.5 * self._interval + 0.5 * gap
        self._last_arrival = now
        loop = asyncio.get_running_loop()
        futures = []
        for request in requests:
            future: asyncio.Future[ItemResult] = loop.create_future()
            self.queue.append(Job(request, now, future))
            futures.append(future)
        self._dispatch()
        return futures

    # -- workers -----------------------------------------------------------------------------

    def worker_ready(self, slot: WorkerSlot) -> None:
        """A slot joins (it is ready); from now on it is idle or busy until it retires or is gone."""
        if slot not in self.members:
            self.members.append(slot)
        self.returning.discard(slot)
        self.last_error = None
        self.sent[id(slot)] = 1  # worker_idle below frees the first place
        for _ in range(capacity(slot) - 1):
            self.idle.append(slot)
        for _ in range(ahead(slot)):
            self.ahead.append(slot)
        self.worker_idle(slot)

    def worker_idle(self, slot: WorkerSlot) -> None:
        """``slot`` finished a batch: a stream is free, or, while it still holds a batch ahead (now
        running), a place ahead is."""
        held = self.sent.get(id(slot), 1) - 1
        self.sent[id(slot)] = held
        if held < capacity(slot):
            self.idle.append(slot)
        else:
            self.ahead.append(slot)
        self._dispatch()

    def retire(self, slot: WorkerSlot) -> None:
        """Stop giving ``slot`` work once it is not needed (it is no longer ready); ``slot.drained()`` says when."""
        if slot in self.retiring:
            return
        self.retiring.add(slot)
        self._dispatch()

    def worker_gone(self, slot: WorkerSlot, error: str | None = None, coming_back: bool = False) -> None:
        """``slot`` lost its process. ``coming_back``: it is being restarted, so queued requests wait for it."""
        if slot in self.members:
            self.members.remove(slot)
        self.retiring.discard(slot)
        if slot in self.idle:
            self.idle = deque(other for other in self.idle if other is not slot)
        if slot in self.ahead:
            self.ahead = deque(other for other in self.ahead if other is not slot)
        self.sent.pop(id(slot), None)
        if error:
            self.last_error = error
        if coming_back:
            self.returning.add(slot)
        else:
            self.returning.discard(slot)
        if not self.has_ready_worker() and not self.retiring and not coming_back:
            self.fail_waiting(503, "ServiceUnavailableException",
                              f'model "{self.name}" lost its last worker; the request was not run')

    def requeue(self, jobs: list[Job]) -> None:
        """Put back, first in line, requests sent ahead to a worker that will not run them (it died or
        was killed while running the batch before them): they were never started."""
        if not jobs:
            return
        self.queue.extendleft(reversed(jobs))
        self._dispatch()

    def fail_waiting(self, status: int, kind: str, message: str) -> None:
        while self.queue:
            job = self.queue.popleft()
            if not job.future.done():
                job.future.set_result(error_result(status, kind, message))

    # -- scheduling ----------------------------------------------------------------------------

    def _dispatch(self) -> None:
        if self.retiring:
            self._release_retiring()
        self._send_batches()
        if self.retiring:
            self._release_retiring()

    def _release_retiring(self) -> None:
        if not self.queue or self.has_ready_worker():
            for slot in {id(slot): slot for slot in self.idle if slot in self.retiring}.values():
                if sum(1 for other in self.idle if other is slot) < capacity(slot):
                    continue  # a stream of it still runs a batch
                self.idle = deque(other for other in self.idle if other is not slot)
                self.ahead = deque(other for other in self.ahead if other is not slot)
                slot.drained()

    def _send_batches(self) -> None:
        while self.queue and self.idle:
            queued = len(self.queue)
            if queued < self.batch_size and self.delay > 0:
                now = self._clock()
                deadline = self.queue[0].arrival + self.delay
                expected_full = now + (self.batch_size - queued) * self._interval
                # Silence for a few arrival intervals means the burst is over: waiting would only add latency.
                quiet = self._last_arrival is not None and now - self._last_arrival > 2 * self._interval + 0.0005
                if now < deadline and expected_full < deadline and not quiet:
                    self._wake_at(max(expected_full, now + 0.0002))
                    return
            jobs = [self.queue.popleft() for _ in range(min(queued, self.batch_size))]
            jobs = [job for job in jobs if not job.future.done()]  # client gone: do not run it
            if jobs:
                self._send(self.idle.popleft(), jobs)
        # every stream is busy: full batches go ahead, to busy workers that hold fewer than they may
        while len(self.queue) >= self.batch_size and self.ahead:
            slot = self.ahead.popleft()
            if slot in self.retiring or not slot.ready:
                continue  # no work ahead for a worker on its way out; it gets its place back if it returns
            jobs = [self.queue.popleft() for _ in range(self.batch_size)]
            jobs = [job for job in jobs if not job.future.done()]
            if jobs:
                self._send(slot, jobs)
            else:
                self.ahead.appendleft(slot)

    def _send(self, slot: WorkerSlot, jobs: list[Job]) -> None:
        self.sent[id(slot)] = self.sent.get(id(slot), 0) + 1
        if self.on_dispatch is not None:
            self.on_dispatch(jobs, self._clock())
        slot.send_batch(jobs)

    def _wake_at(self, when: float) -> None:
        if self._timer is not None:
            if self._timer_due <= when:
                return
            self._timer.cancel()
        self._timer_due = when
        call_later = self._call_later or asyncio.get_running_loop().call_later
        self._timer = call_later(max(0.0, when - self._clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()
