"""The server's worker processes, run: started (forked from the fork server, or exec'd as launcher
instances), their channels read, restarted after a backoff, stopped. What happens to one worker at
each event, and every move between its states, is :class:`WorkerProcess`'s (process.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from typing import Any

from launchkit.launch.spawn import signal_group, spawn_async
from launchkit.serve.fleet.forkserver import ForkServers
from launchkit.serve.fleet.process import WorkerProcess
from launchkit.serve.fleet.state import WorkerState
from launchkit.serve.wire import LOAD_ATTEMPT_ENV, BatchResult, Hello, Stop, encode, read_frame

logger = logging.getLogger(__name__)


class WorkerPool:
    def __init__(self, workers: list[WorkerProcess], forks: ForkServers | None = None) -> None:
        self.workers = {worker.worker_id: worker for worker in workers}
        self.forks = forks  # None: every worker is exec'd (fork_workers=false)
        for worker in workers:
            worker.on_timeout = self._timed_out
        self.stopping = False
        self.started = False
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self.started = True
        for worker in self.workers.values():
            self._spawn(worker)
            self._prepare_fork_server(worker)

    def _prepare_fork_server(self, worker: WorkerProcess) -> None:
        """A fork server for workers like this one starts beside it: the first workers are exec'd, those
        restarted or added later are forked (see :mod:`.forkserver`)."""
        if self.forks is not None:
            self.forks.prepare({**os.environ, **worker.launch.env})

    def add(self, worker: WorkerProcess) -> None:
        worker.on_timeout = self._timed_out
        self.workers[worker.worker_id] = worker
        if self.started:
            self._spawn(worker)
            self._prepare_fork_server(worker)

    def retire(self, worker: WorkerProcess) -> None:
        """Take a worker out of service without losing its work; ``worker.exited`` is set when it is gone."""
        if worker.retire():
            self._forget(worker)

    def _forget(self, worker: WorkerProcess) -> None:
        worker.forgotten()
        self.workers.pop(worker.worker_id, None)

    def _track(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _timed_out(self, worker: WorkerProcess, batch_id: int) -> None:
        """A batch overstayed responseTimeout: answer it, take the worker out of service, kill it."""
        if worker.overstayed(batch_id):
            assert worker.pid is not None and worker.last_error is not None
            worker.disconnected(worker.last_error, self.stopping)
            signal_group(worker.pid, signal.SIGKILL)

    def _spawn(self, worker: WorkerProcess) -> None:
        self._track(self._run(worker))

    async def _run(self, worker: WorkerProcess) -> None:
        if not worker.starting():  # retired before it was started
            return
        bind = worker.launch.cpus if worker.launch.bind_cpus else None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            env = {**os.environ, **worker.launch.env, LOAD_ATTEMPT_ENV: str(worker.load_failures + 1)}
            forked = None if self.forks is None else await self.forks.fork(
                worker.argv, env, bind or (), worker.launch.threads, worker.streams, theirs)
            worker.process = forked or await spawn_async([*worker.argv, "--fd", str(theirs.fileno())], env=env,
                                                         cpus=bind, pass_fds=(theirs.fileno(),))
        except OSError as error:
            ours.close()
            worker.last_error = f"could not start: {error}"
            await self._after_exit(worker, None)
            return
        finally:
            theirs.close()  # the child holds its end; the frontend keeps only its own
        worker.pid = worker.process.pid
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        self._track(self._converse(worker, reader, writer))
        if worker.state is WorkerState.STOPPED:  # retired while it was being started
            signal_group(worker.pid, signal.SIGKILL)
            await worker.process.wait()
            return
        code = await worker.process.wait()
        await self._after_exit(worker, code)

    async def _after_exit(self, worker: WorkerProcess, code: int | None) -> None:
        delay = worker.process_exited(code, self.stopping)
        if delay is None:  # the server is stopping, or the worker was retired
            if worker.retiring and not self.stopping:
                self._forget(worker)
            return
        await asyncio.sleep(delay)
        if worker.retiring:
            self._forget(worker)
        elif not self.stopping:
            self._spawn(worker)

    async def _converse(self, worker: WorkerProcess, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        """The channel of one worker process: its hello, then results, until it closes."""
        try:
            hello = await read_frame(reader)
            if not isinstance(hello, Hello) or hello.worker_id != worker.worker_id or hello.kind not in ("ready",
                                                                                                          "failed"):
                if hello is not None:
                    logger.error("worker %s opened its channel with %r: closed", worker.worker_id, str(hello)[:80])
                writer.close()
                return
            if not worker.said_hello(hello, writer):
                writer.close()
                return
            while True:
                message = await read_frame(reader)
                if message is None:
                    break
                if isinstance(message, BatchResult):
                    worker.answered(message, self.stopping)
                else:  # a second "ready", or anything else: a worker says hello once
                    logger.error("worker %s sent %r after its hello: ignored", worker.worker_id, str(message[0])[:40])
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        if worker.writer is writer:
            worker.disconnected("connection to the worker closed", self.stopping)

    async def stop(self, timeout: float = 10.0) -> None:
        """Ask every worker to stop, then make sure it did."""
        self.stopping = True
        for worker in self.workers.values():
            if worker.writer is not None:
                try:
                    worker.writer.writelines(encode(Stop()))
                except (ConnectionError, RuntimeError):
                    pass
            elif worker.process is not None and worker.process.returncode is None:
                # still loading (no channel until its hello): it has no work, and it would read no Stop
                # before it had loaded and said hello; waiting for it cost the whole graceful period
                signal_group(worker.process.pid, signal.SIGTERM)
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
        if self.forks is not None:
            await self.forks.stop()
