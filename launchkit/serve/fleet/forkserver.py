"""The frontend's side of the fork server (:mod:`launchkit.serve.worker.zygote`): start it, ask it
for workers, learn when they exit.

A worker is forked only when that gives the same worker an exec would: one stream (a multi-stream
worker builds its own thread pools), no numactl in front (memory binding is numactl's exec), and
the same environment as the fork server's apart from the per-worker variables it applies itself
(cores, thread count, OpenMP places). Otherwise, and whenever the fork server is not running, the
pool spawns the worker as before. One fork server per distinct fixed environment (allocator,
OpenMP runtime and wait policy), started with the first such worker.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import platform
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from launchkit.core.cpulist import parse_cpu_list
from launchkit.launch.spawn import signal_group, spawn_async

logger = logging.getLogger(__name__)

WORKER_MODULE = "launchkit.serve.worker"
# What each worker gets for itself; everything else must match the fork server's own environment.
PER_WORKER_VARIABLES = frozenset({
    "OMP_NUM_THREADS", "OMP_PLACES", "OMP_PROC_BIND", "GOMP_CPU_AFFINITY", "KMP_AFFINITY", "MKL_NUM_THREADS",
    "LAUNCHKIT_INSTANCE_ID", "LAUNCHKIT_NUM_INSTANCES", "LAUNCHKIT_CPUS", "LAUNCHKIT_LOAD_ATTEMPT",
})
MAX_SERVERS = 4  # distinct fixed environments; beyond that, workers are exec'd
READY_TIMEOUT_S = 120.0


class ForkedProcess:
    """A forked worker, shaped like the asyncio Process the pool otherwise holds: pid, returncode, wait()."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._exited = asyncio.Event()

    def exited(self, code: int) -> None:
        self.returncode = code
        self._exited.set()

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode


def fixed_environment(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((key, value) for key, value in env.items() if key not in PER_WORKER_VARIABLES))


NUMACTL_POLICIES = ("membind", "preferred", "interleave")
MEMORY_SYSCALLS = {"x86_64": 238, "aarch64": 237}  # set_mempolicy(2), which the child calls instead of numactl


def worker_arguments(argv: Sequence[str]) -> tuple[list[str], dict[str, Any] | None] | None:
    """The worker's own arguments when ``argv`` runs it directly (``python -m launchkit.serve.worker ...``),
    with the memory policy numactl would have set (``numactl --membind=0 -- python ...``); None for anything
    else, which is exec'd."""
    memory = None
    if argv and os.path.basename(argv[0]) == "numactl":
        if len(argv) < 3 or argv[2] != "--" or platform.machine() not in MEMORY_SYSCALLS:
            return None
        flag, _, nodes = argv[1].removeprefix("--").partition("=")
        if flag not in NUMACTL_POLICIES or not nodes:
            return None
        memory = {"policy": flag, "nodes": list(parse_cpu_list(nodes, what="numactl nodes")),
                  "syscall": MEMORY_SYSCALLS[platform.machine()]}
        argv = argv[3:]
    if len(argv) >= 3 and list(argv[1:3]) == ["-m", WORKER_MODULE] and os.path.basename(argv[0]).startswith("python"):
        return list(argv[3:]), memory
    return None


class ForkServer:
    """One fork server process and its control channel."""

    def __init__(self, python: str, env: Mapping[str, str]) -> None:
        self.python = python
        self.env = dict(env)
        self.process: asyncio.subprocess.Process | None = None
        self.ready = False
        self._control: socket.socket | None = None
        self._numbers = itertools.count(1)
        self._forking: dict[int, asyncio.Future[int]] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._early_exits: dict[int, int] = {}  # an exit reported before its fork's answer was read
        self._ready = asyncio.Event()

    async def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = await spawn_async([self.python, "-m", "launchkit.serve.worker.zygote", "--fd",
                                              str(theirs.fileno())], env=self.env, pass_fds=(theirs.fileno(),))
        finally:
            theirs.close()
        ours.setblocking(False)
        self._control = ours
        asyncio.get_running_loop().add_reader(ours.fileno(), self._on_readable)
        try:
            await asyncio.wait_for(self._ready.wait(), READY_TIMEOUT_S)
        except asyncio.TimeoutError:
            logger.warning("the fork server did not start in %g s; workers are exec'd", READY_TIMEOUT_S)
            self.close()
            return
        self.ready = True
        logger.info("fork server %d ready: restarted and added workers skip importing torch", self.process.pid)

    def _on_readable(self) -> None:
        assert self._control is not None
        while True:
            try:
                message = self._control.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            if not message:
                self._lost()
                return
            self._dispatch(json.loads(message))

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "ready" in message:
            self._ready.set()
        elif "forked" in message:
            future = self._forking.pop(message["forked"], None)
            if future is not None and not future.done():
                future.set_result(message["pid"])
        elif "exited" in message:
            child = self._children.pop(message["exited"], None)
            if child is not None:
                child.exited(message["code"])
            else:
                self._early_exits[message["exited"]] = message["code"]

    def _lost(self) -> None:
        """The fork server is gone: its children died with it (PR_SET_PDEATHSIG); say so to their waiters."""
        if self.ready:
            logger.warning("the fork server exited; workers are exec'd from now on")
        self.close()
        for child in self._children.values():
            child.exited(-9)
        self._children.clear()
        for future in self._forking.values():
            if not future.done():
                future.set_exception(OSError("the fork server exited"))
        self._forking.clear()

    async def fork(self, arguments: list[str], memory: dict[str, Any] | None, env: Mapping[str, str],
                   cpus: Sequence[int], threads: int, channel: socket.socket) -> ForkedProcess:
        """A worker with these arguments, environment, cores and threads, talking on ``channel``."""
        if not self.ready or self._control is None:
            raise OSError("the fork server is not running")
        number = next(self._numbers)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._forking[number] = future
        request = {"fork": number, "argv": arguments, "env": dict(env), "cpus": list(cpus), "threads": threads,
                   "memory": memory}
        socket.send_fds(self._control, [json.dumps(request).encode()], [channel.fileno()])
        pid = await asyncio.wait_for(future, 30.0)
        child = ForkedProcess(pid)
        if pid in self._early_exits:
            child.exited(self._early_exits.pop(pid))
        else:
            self._children[pid] = child
        return child

    def close(self, kill: bool = True) -> None:
        self.ready = False
        if self._control is not None:
            try:
                asyncio.get_running_loop().remove_reader(self._control.fileno())
            except RuntimeError:
                pass
            self._control.close()
            self._control = None
        if kill and self.process is not None and self.process.returncode is None:
            signal_group(self.process.pid, 9)


class ForkServers:
    """The pool's fork servers, one per fixed environment, started on first need."""

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python
        self.servers: dict[tuple[tuple[str, str], ...], ForkServer] = {}
        self._starting: set[asyncio.Task[None]] = set()

    def prepare(self, env: Mapping[str, str]) -> None:
        """Start a fork server for workers of this environment, in the background, if there is none."""
        key = fixed_environment(env)
        if key in self.servers or len(self.servers) >= MAX_SERVERS:
            return
        server = ForkServer(self.python, dict(key))
        self.servers[key] = server
        task = asyncio.ensure_future(server.start())
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def fork(self, argv: Sequence[str], env: Mapping[str, str], cpus: Sequence[int], threads: int,
                   streams: int, channel: socket.socket) -> ForkedProcess | None:
        """The worker forked, or None when it must be exec'd (see the module)."""
        direct = worker_arguments(argv)
        server = self.servers.get(fixed_environment(env))
        if direct is None or streams > 1 or server is None or not server.ready:
            return None
        try:
            return await server.fork(*direct, env, cpus, threads, channel)
        except (OSError, asyncio.TimeoutError) as error:
            logger.warning("fork server: %s; this worker is exec'd", error)
            return None

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the fork servers and wait until they are gone (their children die with them)."""
        for task in self._starting:
            task.cancel()
        processes = [server.process for server in self.servers.values() if server.process is not None]
        for server in self.servers.values():
            server.close(kill=False)  # the closed channel tells it to exit
        self.servers.clear()
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except asyncio.TimeoutError:
                signal_group(process.pid, 9)
                await process.wait()
