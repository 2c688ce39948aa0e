"""Worker processes of the server: start them as launcher instances, talk to them, restart them.

Each worker is one instance of a launch plan made for *all* workers of the server at once, so
workers of different models never share cores. Each worker process gets its end of a socketpair
as an inherited file descriptor (``--fd``) and says "ready" on it once its model is loaded.
Nothing listens for workers: a Unix socket in a 0700 folder still let any process of the same
user connect, and the frontend unpickled its first frame before it knew who was speaking. If it
dies, the requests of its batch in flight get a 500 at once, the others stay queued, and it is
restarted after a backoff (0.1 s doubling to 30 s; reset after a minute of good health; at once
for a worker that had been serving). Its states are :class:`WorkerState`, and every move
between them is made by :class:`WorkerProcess`, one method per event of its life (started, said
hello, answered, overstayed, disconnected, exited, retired, forgotten); :class:`WorkerPool`
(pool.py) runs the processes, their channels and the restart timers.

Workers come and go at run time (register, scale, unregister): a retired worker finishes its
batch, helps drain its model's queue if no ready worker is left (see the batcher), then is
told to stop and is not restarted.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from launchkit.launch.runplan import InstanceLaunch
from launchkit.launch.spawn import signal_group
from launchkit.serve.fleet.forkserver import ForkedProcess
from launchkit.serve.fleet.state import WorkerState, check_transition
from launchkit.serve.scheduling.batcher import Job, ModelQueue
from launchkit.serve.wire import BatchResult, Hello, ItemResult, Stop, batch_frame, encode, error_result

logger = logging.getLogger(__name__)
BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
HEALTHY_AFTER_S = 60.0
SERVED_S = 1.0  # a worker that died after serving this long is restarted without delay


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker is, fixed when the fleet plans it: which model, which cores, how it is run."""

    worker_id: str
    model_key: str
    launch: InstanceLaunch
    argv: list[str]
    response_timeout_s: float
    max_load_failures: int = 3  # after this many load failures in a row its model is marked failed (still retried)
    streams: int = 1  # batches it runs at once (multi-stream worker: one per stream)
    batches_ahead: int = 0  # full batches it may hold beyond those it runs (see the batcher)


@dataclass(eq=False)  # identity: the batcher keeps workers in sets
class WorkerProcess:
    """One worker's life: its spec, its process and connection, its batches, its history."""

    spec: WorkerSpec
    queue: ModelQueue
    # live
    state: WorkerState = WorkerState.STARTING
    pid: int | None = None
    process: asyncio.subprocess.Process | ForkedProcess | None = None
    writer: asyncio.StreamWriter | None = None
    info: dict[str, Any] = field(default_factory=dict)
    in_flight: dict[int, list[Job]] = field(default_factory=dict)
    timeouts: dict[int, asyncio.TimerHandle] = field(default_factory=dict)  # per batch in flight
    retiring: bool = False  # taken out of service for good: never restarted
    loaded: asyncio.Event = field(default_factory=asyncio.Event)  # ready once, or failed to load
    exited: asyncio.Event = field(default_factory=asyncio.Event)  # retired and gone for good
    # history
    started_at: float = 0.0
    connected_at: float | None = None  # when it said ready in its current life
    restarts: int = 0
    consecutive_failures: int = 0
    load_failures: int = 0  # in a row: exits before it ever said ready (reset once it does)
    last_error: str | None = None
    # callbacks
    on_timeout: Any = None  # set by the pool: called with (worker, batch_id) when a batch overstays
    # metrics: called with the handler's stage timings, the batch's size and the handler's own metrics
    on_batch_done: Callable[[dict[str, float], int, list[Any] | None], None] | None = None

    # -- its spec, by name (read everywhere) ------------------------------------------------------

    @property
    def worker_id(self) -> str:
        return self.spec.worker_id

    @property
    def model_key(self) -> str:
        return self.spec.model_key

    @property
    def launch(self) -> InstanceLaunch:
        return self.spec.launch

    @property
    def argv(self) -> list[str]:
        return self.spec.argv

    @property
    def response_timeout_s(self) -> float:
        return self.spec.response_timeout_s

    @property
    def streams(self) -> int:
        return self.spec.streams

    @property
    def ready(self) -> bool:
        """Takes new batches (see :attr:`WorkerState.ready`)."""
        return self.state.ready

    @property
    def capacity(self) -> int:
        """For the batcher: how many batches this worker runs at once."""
        return self.streams

    @property
    def ahead(self) -> int:
        """For the batcher: full batches it may hold beyond those it runs (they wait in its socket). A
        single-stream worker reads its next batch as soon as it has answered one, so one waiting there
        starts at once (the fleet gives a multi-stream worker none: it hands batches to its streams)."""
        return self.spec.batches_ahead

    @property
    def failed_to_load(self) -> bool:
        """Its model failed to load ``max_load_failures`` times in a row (and it has not loaded since)."""
        return self.load_failures >= self.spec.max_load_failures

    def move_to(self, state: WorkerState) -> None:
        check_transition(self.state, state)
        self.state = state

    # -- the batcher's WorkerSlot -------------------------------------------------------------

    def send_batch(self, jobs: list[Job]) -> None:
        batch_id = next(_batch_ids)
        self.in_flight[batch_id] = jobs
        if self.state is WorkerState.READY:
            self.move_to(WorkerState.BUSY)  # a RETIRING worker draining its queue stays RETIRING
        assert self.writer is not None
        self.writer.writelines(batch_frame(batch_id, [job.request for job in jobs]))
        self._time_running_batches()

    def _time_running_batches(self) -> None:
        """Start the response timeout of each batch that runs now (the oldest ``streams`` in flight): a
        batch ahead waits in the worker's socket, and its time starts when it does."""
        loop = asyncio.get_running_loop()
        for batch_id in list(self.in_flight)[:self.streams]:
            if batch_id not in self.timeouts:
                self.timeouts[batch_id] = loop.call_later(self.response_timeout_s, self.on_timeout, self, batch_id)

    def drained(self) -> None:
        """The batcher no longer needs this retiring worker: ask it to exit."""
        self.move_to(WorkerState.STOPPING)
        if self.writer is not None:
            try:
                self.writer.writelines(encode(Stop()))
            except (ConnectionError, RuntimeError):
                pass

    def fail_in_flight(self, status: int, kind: str, message: str) -> None:
        """Answer every request of the batches it runs with an error (it will not answer them); batches
        ahead, which it never started, go back to the front of the model's queue."""
        for handle in self.timeouts.values():
            handle.cancel()
        self.timeouts.clear()
        batches = list(self.in_flight.values())
        self.in_flight.clear()
        for jobs in batches[:self.streams]:
            for job in jobs:
                if not job.future.done():
                    job.future.set_result(error_result(status, kind, message))
        self.queue.requeue([job for jobs in batches[self.streams:] for job in jobs])

    # -- its life, event by event: every state move of a worker is made by one of these ----------

    def starting(self) -> bool:
        """A process is about to be started for it; False when it was retired before that."""
        if self.state is WorkerState.STOPPED:
            return False
        if self.state is not WorkerState.STARTING:
            self.move_to(WorkerState.STARTING)
        self.started_at = time.time()
        self.connected_at = None
        return True

    def said_hello(self, hello: Hello, writer: asyncio.StreamWriter) -> bool:
        """Its first frame: ready (True: results follow on ``writer``) or failed to load (False)."""
        if hello.kind == "failed":
            self.last_error = f"model failed to load: {hello.detail}"
            self.queue.last_error = self.last_error
            self.loaded.set()
            return False
        self.info = hello.detail
        self.writer = writer
        self.connected_at = time.time()
        self.load_failures = 0
        if self.retiring:  # retired while it was loading
            self.drained()
        else:
            self.move_to(WorkerState.READY)
            self.queue.worker_ready(self)
        self.loaded.set()
        return True

    def answered(self, message: BatchResult, stopping: bool) -> None:
        """A batch's results came back: they go to their requests, and the worker takes more work."""
        jobs = self.in_flight.pop(message.batch_id, None)
        handle = self.timeouts.pop(message.batch_id, None)
        if handle is not None:
            handle.cancel()
        if jobs is None:
            return  # the batch timed out and was answered already
        if self.in_flight:
            self._time_running_batches()  # a batch ahead has started
        results: list[ItemResult] = message.results
        for job, result in zip(jobs, results):
            if not job.future.done():
                job.future.set_result(result)
        if self.on_batch_done is not None:
            self.on_batch_done(message.timings, len(jobs), message.metrics)
        if not stopping:
            if self.state is WorkerState.BUSY and not self.in_flight:  # every stream is free again
                self.move_to(WorkerState.READY)
            self.queue.worker_idle(self)

    def overstayed(self, batch_id: int) -> bool:
        """A batch overstayed responseTimeout: it is answered with a 500; True when the worker must be killed."""
        if batch_id not in self.in_flight or not self.pid:
            return False
        self.timeouts.pop(batch_id, None)
        self.last_error = f"no response within responseTimeout={self.response_timeout_s:g} s: worker killed"
        self.fail_in_flight(500, "InternalServerException", f"worker {self.worker_id} did not respond in "
                            f"{self.response_timeout_s:g} s and was restarted")
        return True

    def disconnected(self, reason: str, stopping: bool) -> None:
        """Its channel is gone (closed, or the process exited): idempotent."""
        self.fail_in_flight(500, "InternalServerException",
                            f"worker {self.worker_id} of model {self.queue.name} died ({reason}); "
                            "the request was not completed")
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.move_to(WorkerState.EXITED)
            # a worker that will be restarted keeps its model's queued requests waiting for it
            self.queue.worker_gone(self, None if stopping else reason,
                                   coming_back=not self.retiring and not stopping)

    def process_exited(self, code: int | None, stopping: bool) -> float | None:
        """Its process ended with ``code`` (None: it never started): the delay before it is restarted, or
        None when it is not (the server is stopping, or it was retired)."""
        never_connected = self.connected_at is None
        if code is not None and code != 0 and not stopping:
            reason = f"exited with status {code}" if code > 0 else f"killed by {signal.Signals(-code).name}"
            self.last_error = self.last_error if never_connected and self.last_error else reason
        self.disconnected(self.last_error or "exited", stopping)
        if self.state is not WorkerState.EXITED:  # it never connected (a load failure, or killed while loading)
            if self.last_error:
                self.queue.last_error = self.last_error
            self.move_to(WorkerState.EXITED)
        if stopping:
            self.move_to(WorkerState.STOPPED)
            return None
        if self.retiring:
            return None
        healthy = not never_connected and time.time() - self.started_at > HEALTHY_AFTER_S
        self.consecutive_failures = 0 if healthy else self.consecutive_failures + 1
        # A worker that had been serving for a while (killed, crashed under load) comes back at once: its
        # model's requests are waiting. Load failures and deaths right after loading back off.
        served = self.connected_at is not None and time.time() - self.connected_at >= SERVED_S
        delay = 0.0 if served else BACKOFF_S[min(self.consecutive_failures, len(BACKOFF_S) - 1)]
        self.restarts += 1
        if never_connected:
            self.load_failures += 1
        if self.failed_to_load:
            self.queue.returning.discard(self)  # not on its way back: new requests get the 503 at once
            self.move_to(WorkerState.FAILED)
            self.queue.fail_waiting(503, "ServiceUnavailableException", f'model "{self.queue.name}" is marked '
                                    f"failed: {self.last_error}")
            marked = " (model marked failed)" if self.load_failures == self.spec.max_load_failures else ""
            logger.error("worker %s (%s): load attempt %d failed%s: %s; retrying in %g s", self.worker_id,
                         self.queue.name, self.load_failures, marked, self.last_error, delay)
        else:
            self.move_to(WorkerState.RESTARTING)
            logger.warning("worker %s (%s) %s; restarting in %g s", self.worker_id, self.queue.name,
                           self.last_error, delay)
        return delay

    def retire(self) -> bool:
        """Take it out of service for good, without losing its work; True when it can be forgotten at once."""
        if self.retiring:
            return False
        self.retiring = True
        if self.writer is not None:
            self.move_to(WorkerState.RETIRING)
            self.queue.retire(self)
        elif self.state is WorkerState.STARTING and self.process is not None and self.process.returncode is None:
            self.move_to(WorkerState.STOPPING)  # still loading: nothing to drain
            signal_group(self.process.pid, signal.SIGTERM)
        elif self.state in (WorkerState.RESTARTING, WorkerState.FAILED) or self.process is None:
            return True
        # EXITED: its process is on its way out; process_exited sees ``retiring`` and the pool forgets it
        return False

    def forgotten(self) -> None:
        """Gone for good: whoever waits for it to exit or load stops waiting."""
        self.queue.returning.discard(self)
        self.move_to(WorkerState.STOPPED)
        self.exited.set()
        self.loaded.set()


_batch_ids = itertools.count(1)
