"""Worker processes of the server: start them as launcher instances, talk to them, restart them.

Each worker is one instance of a launch plan made for *all* workers of the server at once, so
workers of different models never share cores. A worker connects back over a Unix socket and
says "ready" once its model is loaded. If it dies, the requests of its batch in flight get a
500 at once, the others stay queued, and it is restarted after a backoff (0.1 s doubling to
30 s; reset after a minute of good health). Its states are :class:`WorkerState`.

Workers come and go at run time (register, scale, unregister): a retired worker finishes its
batch, helps drain its model's queue if no ready worker is left (see the batcher), then is
told to stop and is not restarted.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from launchkit.launch.runplan import InstanceLaunch
from launchkit.launch.spawn import signal_group, spawn_async
from launchkit.serve.fleet.state import WorkerState, check_transition
from launchkit.serve.scheduling.batcher import Job, ModelQueue
from launchkit.serve.wire import ItemResult, batch_frame, encode, error_result, read_frame

logger = logging.getLogger(__name__)
BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
HEALTHY_AFTER_S = 60.0


@dataclass(eq=False)  # identity: the batcher keeps workers in sets
class WorkerProcess:
    """One worker: which model, which cores, its process and connection, its history."""

    worker_id: str
    model_key: str
    queue: ModelQueue
    launch: InstanceLaunch
    argv: list[str]
    response_timeout_s: float
    state: WorkerState = WorkerState.STARTING
    pid: int | None = None
    started_at: float = 0.0
    connected_at: float | None = None  # when it said ready in its current life
    restarts: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    writer: asyncio.StreamWriter | None = None
    in_flight: dict[int, list[Job]] = field(default_factory=dict)
    timeout_handle: asyncio.TimerHandle | None = None
    on_timeout: Any = None  # set by the pool: called with (worker, batch_id) when a batch overstays
    on_batch_done: Any = None  # metrics: called with the handler's stage timings of each batch
    retiring: bool = False  # taken out of service for good: never restarted
    loaded: asyncio.Event = field(default_factory=asyncio.Event)  # ready once, or failed to load
    exited: asyncio.Event = field(default_factory=asyncio.Event)  # retired and gone for good

    @property
    def ready(self) -> bool:
        """Takes new batches (see :attr:`WorkerState.ready`)."""
        return self.state.ready

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
        loop = asyncio.get_running_loop()
        self.timeout_handle = loop.call_later(self.response_timeout_s, self.on_timeout, self, batch_id)

    def drained(self) -> None:
        """The batcher no longer needs this retiring worker: ask it to exit."""
        self.move_to(WorkerState.STOPPING)
        if self.writer is not None:
            try:
                self.writer.writelines(encode(("stop",)))
            except (ConnectionError, RuntimeError):
                pass

    def _fail_in_flight(self, status: int, kind: str, message: str) -> None:
        for jobs in self.in_flight.values():
            for job in jobs:
                if not job.future.done():
                    job.future.set_result(error_result(status, kind, message))
        self.in_flight.clear()


_batch_ids = itertools.count(1)


class WorkerPool:
    def __init__(self, socket_path: str, workers: list[WorkerProcess]) -> None:
        self.socket_path = socket_path
        self.workers = {worker.worker_id: worker for worker in workers}
        for worker in workers:
            worker.on_timeout = self._timed_out
        self.stopping = False
        self.started = False
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._on_connection, path=self.socket_path)
        os.chmod(self.socket_path, 0o600)
        self.started = True
        for worker in self.workers.values():
            self._spawn(worker)

    def add(self, worker: WorkerProcess) -> None:
        worker.on_timeout = self._timed_out
        self.workers[worker.worker_id] = worker
        if self.started:
            self._spawn(worker)

    def retire(self, worker: WorkerProcess) -> None:
        """Take a worker out of service without losing its work; ``worker.exited`` is set when it is gone."""
        if worker.retiring:
            return
        worker.retiring = True
        if worker.writer is not None:
            worker.move_to(WorkerState.RETIRING)
            worker.queue.retire(worker)
        elif worker.state is WorkerState.STARTING and worker.process is not None and worker.process.returncode is None:
            worker.move_to(WorkerState.STOPPING)  # still loading: nothing to drain
            signal_group(worker.process.pid, signal.SIGTERM)
        elif worker.state in (WorkerState.RESTARTING, WorkerState.FAILED) or worker.process is None:
            self._forget(worker)
        # EXITED: its process is on its way out; _after_exit sees ``retiring`` and forgets it

    def _forget(self, worker: WorkerProcess) -> None:
        worker.move_to(WorkerState.STOPPED)
        self.workers.pop(worker.worker_id, None)
        worker.exited.set()
        worker.loaded.set()

    def _track(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _timed_out(self, worker: WorkerProcess, batch_id: int) -> None:
        """A batch overstayed responseTimeout: answer it, take the worker out of service, kill it."""
        if batch_id not in worker.in_flight or not worker.pid:
            return
        worker.timeout_handle = None
        worker.last_error = f"no response within responseTimeout={worker.response_timeout_s:g} s: worker killed"
        worker._fail_in_flight(500, "InternalServerException", f"worker {worker.worker_id} did not respond in "
                               f"{worker.response_timeout_s:g} s and was restarted")
        self._disconnect(worker, worker.last_error)
        signal_group(worker.pid, signal.SIGKILL)

    def _spawn(self, worker: WorkerProcess) -> None:
        self._track(self._run(worker))

    async def _run(self, worker: WorkerProcess) -> None:
        if worker.state is WorkerState.STOPPED:  # retired before it was started
            return
        if worker.state is not WorkerState.STARTING:
            worker.move_to(WorkerState.STARTING)
        worker.started_at = time.time()
        worker.connected_at = None
        bind = worker.launch.cpus if worker.launch.bind_cpus else None
        try:
            worker.process = await spawn_async(worker.argv, env={**os.environ, **worker.launch.env}, cpus=bind)
        except OSError as error:
            worker.last_error = f"could not start: {error}"
            await self._after_exit(worker, None)
            return
        worker.pid = worker.process.pid
        if worker.state is WorkerState.STOPPED:  # retired while it was being started
            signal_group(worker.pid, signal.SIGKILL)
            await worker.process.wait()
            return
        code = await worker.process.wait()
        await self._after_exit(worker, code)

    def _disconnect(self, worker: WorkerProcess, reason: str) -> None:
        """The worker is gone (connection closed or process exited): idempotent."""
        if worker.timeout_handle is not None:
            worker.timeout_handle.cancel()
            worker.timeout_handle = None
        worker._fail_in_flight(500, "InternalServerException",
                               f"worker {worker.worker_id} of model {worker.queue.name} died ({reason}); "
                               "the request was not completed")
        if worker.writer is not None:
            worker.writer.close()
            worker.writer = None
            worker.move_to(WorkerState.EXITED)
            worker.queue.worker_gone(worker, None if self.stopping else reason)

    async def _after_exit(self, worker: WorkerProcess, code: int | None) -> None:
        never_connected = worker.connected_at is None
        if code is not None and code != 0 and not self.stopping:
            reason = f"exited with status {code}" if code > 0 else f"killed by {signal.Signals(-code).name}"
            worker.last_error = worker.last_error if never_connected and worker.last_error else reason
        self._disconnect(worker, worker.last_error or "exited")
        if worker.state is not WorkerState.EXITED:  # it never connected (a load failure, or killed while loading)
            if worker.last_error:
                worker.queue.last_error = worker.last_error
            worker.move_to(WorkerState.EXITED)
        if self.stopping:
            worker.move_to(WorkerState.STOPPED)
            return
        if worker.retiring:
            self._forget(worker)
            return
        healthy = not never_connected and time.time() - worker.started_at > HEALTHY_AFTER_S
        worker.consecutive_failures = 0 if healthy else worker.consecutive_failures + 1
        delay = BACKOFF_S[min(worker.consecutive_failures, len(BACKOFF_S) - 1)]
        worker.move_to(WorkerState.RESTARTING)
        worker.restarts += 1
        logger.warning("worker %s (%s) %s; restarting in %g s", worker.worker_id, worker.queue.name,
                       worker.last_error, delay)
        await asyncio.sleep(delay)
        if worker.retiring:
            self._forget(worker)
        elif not self.stopping:
            self._spawn(worker)

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        worker: WorkerProcess | None = None
        try:
            hello = await read_frame(reader)
            if hello is None or hello[1] not in self.workers:
                writer.close()
                return
            kind, worker_id, pid, detail = hello
            worker = self.workers[worker_id]
            if kind == "failed":
                worker.last_error = f"model failed to load: {detail}"
                worker.queue.last_error = worker.last_error
                worker.loaded.set()
                writer.close()
                return
            worker.info = detail
            worker.writer = writer
            worker.connected_at = time.time()
            if worker.retiring:  # retired while it was loading
                worker.drained()
                worker.loaded.set()
            else:
                worker.move_to(WorkerState.READY)
                worker.loaded.set()
                worker.queue.worker_ready(worker)
            while True:
                message = await read_frame(reader)
                if message is None:
                    break
                if message[0] == "result":
                    self._on_result(worker, message)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        if worker is not None and worker.writer is writer:
            self._disconnect(worker, "connection to the worker closed")

    def _on_result(self, worker: WorkerProcess, message: tuple[Any, ...]) -> None:
        batch_id = message[1]
        jobs = worker.in_flight.pop(batch_id, None)
        if worker.timeout_handle is not None:
            worker.timeout_handle.cancel()
            worker.timeout_handle = None
        if jobs is None:
            return  # the batch timed out and was answered already
        results: list[ItemResult] = message[2]
        for job, result in zip(jobs, results):
            if not job.future.done():
                job.future.set_result(result)
        if worker.on_batch_done is not None and len(message) > 3:
            worker.on_batch_done(message[3])
        if not self.stopping:
            if worker.state is WorkerState.BUSY:
                worker.move_to(WorkerState.READY)
            worker.queue.worker_idle(worker)

    async def stop(self, timeout: float = 10.0) -> None:
        """Ask every worker to stop, then make sure it did."""
        self.stopping = True
        for worker in self.workers.values():
            if worker.writer is not None:
                try:
                    worker.writer.writelines(encode(("stop",)))
                except (ConnectionError, RuntimeError):
                    pass
        processes = [w.process for w in self.workers.values() if w.process and w.process.returncode is None]
        if processes:
            done, pending = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in processes], timeout=timeout)
            for process in processes:
                if process.returncode is None:
                    signal_group(process.pid, signal.SIGKILL)
            if pending:
                await asyncio.wait(pending, timeout=5)
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
