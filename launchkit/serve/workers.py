"""Worker processes of the server: start them as launcher instances, talk to them, restart them.

Each worker is one instance of a launch plan made for *all* workers of the server at once, so
workers of different models never share cores. A worker connects back over a Unix socket and
says "ready" once its model is loaded. If it dies, the requests of its batch in flight get a
500 at once, the others stay queued, and it is restarted after a backoff (0.1 s doubling to
30 s; reset after a minute of good health).

Workers come and go at run time (register, scale, unregister): a retired worker finishes its
batch, helps drain its model's queue if no active worker is left (see the batcher), then is
told to stop and is not restarted.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pickle
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from launchkit.launch.runplan import InstanceLaunch
from launchkit.launch.supervise import child_setup
from launchkit.serve.batcher import Job, ModelQueue
from launchkit.serve.http_errors import error_result
from launchkit.serve.protocol import BUFFER_LENGTH, HEADER, OUT_OF_BAND, ItemResult, decode, encode

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
    state: str = "starting"  # starting | ready | busy | restarting | retiring | stopping | stopped
    pid: int | None = None
    started_at: float = 0.0
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
    retiring: bool = False
    loaded: asyncio.Event = field(default_factory=asyncio.Event)  # ready once, or failed to load
    exited: asyncio.Event = field(default_factory=asyncio.Event)  # retired and gone for good

    # -- the batcher's WorkerSlot -------------------------------------------------------------

    def send_batch(self, jobs: list[Job]) -> None:
        batch_id = next(_batch_ids)
        self.in_flight[batch_id] = jobs
        self.state = "busy"
        assert self.writer is not None
        requests = [job.request if len(job.request.body) < OUT_OF_BAND else
                    job.request._replace(body=pickle.PickleBuffer(job.request.body)) for job in jobs]
        self.writer.writelines(encode(("batch", batch_id, requests)))
        loop = asyncio.get_running_loop()
        self.timeout_handle = loop.call_later(self.response_timeout_s, self.on_timeout, self, batch_id)

    def drained(self) -> None:
        """The batcher no longer needs this retiring worker: ask it to exit."""
        self.state = "stopping"
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
        was_ready = worker.state in ("ready", "busy")
        if worker.writer is None:  # still starting (or between restarts): nothing to drain
            if worker.process is not None and worker.process.returncode is None:
                worker.state = "stopping"
                _kill(worker.process.pid, signal.SIGTERM)
            else:
                self._forget(worker)
            return
        worker.state = "retiring"
        worker.queue.retire(worker, was_ready)

    def _forget(self, worker: WorkerProcess) -> None:
        worker.state = "stopped"
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
        _kill(worker.pid, signal.SIGKILL)

    def _spawn(self, worker: WorkerProcess) -> None:
        self._track(self._run(worker))

    async def _run(self, worker: WorkerProcess) -> None:
        worker.state = "starting"
        worker.started_at = time.time()
        bind = worker.launch.cpus if worker.launch.bind_cpus else None
        try:
            worker.process = await asyncio.create_subprocess_exec(
                *worker.argv, env={**os.environ, **worker.launch.env}, stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True, preexec_fn=child_setup(bind),
            )
        except OSError as error:
            worker.last_error = f"could not start: {error}"
            await self._after_exit(worker, None)
            return
        worker.pid = worker.process.pid
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
            was_ready = worker.state in ("ready", "busy")
            worker.state = "exiting"
            worker.queue.worker_gone(worker, was_ready, None if self.stopping else reason)

    async def _after_exit(self, worker: WorkerProcess, code: int | None) -> None:
        was_ready = worker.state in ("ready", "busy", "exiting")
        if code is not None and code != 0 and not self.stopping:
            reason = f"exited with status {code}" if code > 0 else f"killed by {signal.Signals(-code).name}"
            worker.last_error = worker.last_error if worker.state == "starting" and worker.last_error else reason
        self._disconnect(worker, worker.last_error or "exited")
        if worker.state == "starting" and worker.last_error:
            worker.queue.last_error = worker.last_error
        if self.stopping:
            worker.state = "stopped"
            return
        if worker.retiring:
            self._forget(worker)
            return
        healthy = was_ready and time.time() - worker.started_at > HEALTHY_AFTER_S
        worker.consecutive_failures = 0 if healthy else worker.consecutive_failures + 1
        delay = BACKOFF_S[min(worker.consecutive_failures, len(BACKOFF_S) - 1)]
        worker.state = "restarting"
        worker.restarts += 1
        print(f"launchkit serve: worker {worker.worker_id} ({worker.queue.name}) {worker.last_error}; "
              f"restarting in {delay:g} s", file=sys.stderr, flush=True)
        await asyncio.sleep(delay)
        if worker.retiring:
            self._forget(worker)
        elif not self.stopping:
            self._spawn(worker)

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        worker: WorkerProcess | None = None
        try:
            hello = await _read_frame(reader)
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
            worker.loaded.set()
            if worker.retiring:  # retired while it was loading
                worker.drained()
            else:
                worker.state = "ready"
                worker.queue.worker_ready(worker)
            while True:
                message = await _read_frame(reader)
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
            worker.state = "retiring" if worker.retiring else "ready"
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
                    _kill(process.pid, signal.SIGKILL)
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


def _kill(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


async def _read_frame(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    try:
        length, count = HEADER.unpack(await reader.readexactly(HEADER.size))
        lengths = await reader.readexactly(BUFFER_LENGTH.size * count) if count else b""
        payload = await reader.readexactly(length)
        buffers = [await reader.readexactly(BUFFER_LENGTH.unpack_from(lengths, i * BUFFER_LENGTH.size)[0])
                   for i in range(count)]
        return decode(payload, buffers)
    except asyncio.IncompleteReadError:
        return None
