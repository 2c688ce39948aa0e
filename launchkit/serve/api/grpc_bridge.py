"""The frontend's side of its gRPC relays: start them, answer the calls they forward, stop them.

Each relay (:mod:`launchkit.serve.api.grpc_relay`) runs grpc.aio's server in a process of its own and
forwards every call here over a Unix socket in the server's private folder. Here each call runs the
method's own handler (the ``grpc.RpcMethodHandler`` that :func:`.grpc_server.method_handler` made:
the same token check, malformed-message check and method as in-process gRPC) with a
:class:`RelayedContext` in place of grpc.aio's context, and its encoded answer or status goes back.
A relay that dies is started again; the frontend waits for every relay to listen before it says
it is ready, and a relay that cannot listen (a port in use) fails the start with the relay's reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import grpc

from launchkit.core.errors import ServeError
from launchkit.launch.spawn import spawn_async
from launchkit.serve.api.grpc_frames import GRACE, Call, FrameReader, FrameWriter, Kind, end_frame, frame, parse_call
from launchkit.serve.api.grpc_server import Service

logger = logging.getLogger(__name__)
START_TIMEOUT_S = 60.0
RESTART_DELAY_S = 0.5


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class RelayedContext:
    """What the methods use of grpc.aio's ``ServicerContext``, for a call a relay forwarded."""

    __slots__ = ("_metadata",)

    def __init__(self, authorization: str) -> None:
        self._metadata = (("authorization", authorization),) if authorization else ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise Aborted(code, details)


@dataclass(frozen=True)
class RelayedServer:
    """One gRPC address the relays listen on and the services it serves."""

    target: str  # host:port
    key: str  # its config.properties key, for messages
    flag: str  # its command-line flag, for messages
    services: tuple[Service, ...]


def shape_of(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming:
        return "stream_stream"
    return "unary_stream" if handler.response_streaming else "unary"


class RelayConnection(asyncio.Protocol):
    """One relay's socket: its calls run here as tasks."""

    def __init__(self, relays: GrpcRelays) -> None:
        self.relays = relays
        self.reader = FrameReader()
        self.transport: asyncio.Transport | None = None
        self.writer: FrameWriter | None = None
        self.pid = 0
        self.gone = False
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.requests: dict[int, asyncio.Queue[bytes | None]] = {}
        self.failure: str | None = None  # why it could not listen

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.writer = FrameWriter(self.transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        for item in self.reader.feed(data):
            kind = item.kind
            if kind is Kind.CALL:
                self._start(item.call, parse_call(item.payload))
            elif kind is Kind.MESSAGE or kind is Kind.HALF_CLOSE:
                queue = self.requests.get(item.call)
                if queue is not None:
                    queue.put_nowait(item.payload if kind is Kind.MESSAGE else None)
            elif kind is Kind.CANCEL:
                task = self.tasks.get(item.call)
                if task is not None:
                    task.cancel()
            elif kind is Kind.HELLO:
                self.pid = int(item.payload)
                self.send(frame(Kind.SETUP, 0, self.relays.setup))
            elif kind is Kind.READY:
                self.relays.connected(self)
            elif kind is Kind.FAILED:
                self.failure = item.payload.decode(errors="replace")
                self.relays.changed()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.relays.disconnected(self)
        for task in list(self.tasks.values()):
            task.cancel()  # nobody is left to answer
        self.relays.changed()

    def send(self, data: bytes) -> None:
        if self.writer is not None:
            self.writer.send(data)

    def _start(self, call_id: int, call: Call) -> None:
        handler = self.relays.handlers.get(call.method)
        if handler is None:
            self.send(end_frame(call_id, grpc.StatusCode.UNIMPLEMENTED.value[0], f"no method {call.method}"))
            return
        if call.message is None:
            self.requests[call_id] = asyncio.Queue()
        task = asyncio.get_running_loop().create_task(self._run(call_id, handler, call))
        self.tasks[call_id] = task

    async def _run(self, call_id: int, handler: grpc.RpcMethodHandler, call: Call) -> None:
        context = RelayedContext(call.authorization)
        try:
            if handler.unary_unary is not None:
                answer = await handler.unary_unary(handler.request_deserializer(call.message), context)
                self.send(frame(Kind.ANSWER, call_id, handler.response_serializer(answer)))
                return
            if handler.unary_stream is not None:
                answers = handler.unary_stream(handler.request_deserializer(call.message), context)
            else:
                answers = handler.stream_stream(self._requests(call_id, handler), context)
            async for answer in answers:
                self.send(frame(Kind.MESSAGE, call_id, handler.response_serializer(answer)))
            self.send(end_frame(call_id, 0))
        except Aborted as aborted:
            self.send(end_frame(call_id, aborted.code.value[0], aborted.details))
        except asyncio.CancelledError:
            pass  # the client went away (or the relay did): nobody waits for an answer
        except Exception as error:  # a bug: the call ends with INTERNAL, the server goes on
            logger.exception("gRPC call %s failed", call.method)
            self.send(end_frame(call_id, grpc.StatusCode.INTERNAL.value[0], f"internal error: {error}"))
        finally:
            self.tasks.pop(call_id, None)
            self.requests.pop(call_id, None)

    async def _requests(self, call_id: int, handler: grpc.RpcMethodHandler) -> AsyncIterator[Any]:
        queue = self.requests[call_id]
        while (message := await queue.get()) is not None:
            yield handler.request_deserializer(message)


class GrpcRelays:
    """The relay processes of one server: started, restarted when one dies, stopped with the server."""

    def __init__(self, servers: list[RelayedServer], processes: int, workdir: Path, max_receive: int,
                 max_send: int) -> None:
        self.handlers = {f"/{name}/{method}": handler for server in servers for name, methods in server.services
                         for method, handler in methods.items()}
        self.servers = servers
        self.processes = processes
        self.socket_path = str(workdir / "grpc-relays.sock")
        self.setup = json.dumps({
            "servers": [{"target": server.target, "key": server.key, "flag": server.flag,
                         "methods": {f"/{name}/{method}": shape_of(handler) for name, methods in server.services
                                     for method, handler in methods.items()}} for server in servers],
            "max_receive": max_receive, "max_send": max_send, "reuse_port": processes > 1}).encode()
        self.connections: dict[int, RelayConnection] = {}  # by pid: the relays listening now
        self.listened: set[int] = set()  # pids of the relays that listened at some point
        self.pending: dict[int, RelayConnection] = {}
        self.children: dict[int, asyncio.subprocess.Process] = {}
        self.stopping = False
        self._sockets: list[RelayConnection] = []  # every relay's connection, listening or not
        self._changed = asyncio.Event()  # a relay listened, failed or exited
        self._watchers: set[asyncio.Task[None]] = set()
        self._listener: asyncio.AbstractServer | None = None

    def connected(self, connection: RelayConnection) -> None:
        self.connections[connection.pid] = connection
        self.listened.add(connection.pid)
        self._changed.set()

    def changed(self) -> None:
        """A relay failed to listen or its socket closed: the start-up wait looks again."""
        self._changed.set()

    def disconnected(self, connection: RelayConnection) -> None:
        if self.connections.get(connection.pid) is connection:
            del self.connections[connection.pid]

    async def start(self) -> None:
        """Listen for relays, start them, and return once every one listens on every address."""
        for server in self.servers:
            # a port in use is the likeliest failure: say so before starting anything (and with SO_REUSEPORT,
            # which more than one relay needs, gRPC would otherwise share a port another server holds)
            _check_free(server)
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_unix_server(self._accept, self.socket_path)
        os.chmod(self.socket_path, 0o600)
        for _ in range(self.processes):
            await self._spawn()
        try:
            await asyncio.wait_for(self._all_ready(), START_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise ServeError(f"the gRPC relays did not listen within {START_TIMEOUT_S:g} s") from None

    def _accept(self) -> RelayConnection:
        connection = RelayConnection(self)
        self._sockets = [known for known in self._sockets if not known.gone] + [connection]
        return connection

    async def _all_ready(self) -> None:
        while len(self.connections) < self.processes:
            for connection in self._sockets:
                if connection.failure is not None:
                    raise ServeError(connection.failure)
            if len(self.children) < self.processes:  # one exited before it listened
                raise ServeError("a gRPC relay exited before it listened (its error is above)")
            await self._changed.wait()
            self._changed.clear()

    async def _spawn(self) -> None:
        # in a session of its own (a terminal's Ctrl-C is the frontend's to handle), ending with the frontend
        child = await spawn_async([sys.executable, "-m", "launchkit.serve.api.grpc_relay", self.socket_path])
        self.children[child.pid] = child
        watcher = asyncio.ensure_future(self._watch(child))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _watch(self, child: asyncio.subprocess.Process) -> None:
        status = await child.wait()
        self.children.pop(child.pid, None)
        self._changed.set()
        connection = self.connections.pop(child.pid, None)
        if connection is not None and connection.transport is not None:
            connection.transport.close()
        if self.stopping or child.pid not in self.listened:
            return  # stopped by us, or never listened (the start reports that)
        self.listened.discard(child.pid)
        logger.error("gRPC relay %d exited with status %s; starting another", child.pid, status)
        await asyncio.sleep(RESTART_DELAY_S)
        if not self.stopping:
            await self._spawn()

    async def stop(self, grace: float) -> None:
        """Tell every relay to stop accepting and finish its calls within ``grace`` s; wait for them."""
        self.stopping = True
        for connection in self._sockets:
            connection.send(frame(Kind.STOP, 0, GRACE.pack(grace)))
        children = list(self.children.values())
        if children:
            _done, late = await asyncio.wait([asyncio.ensure_future(child.wait()) for child in children],
                                             timeout=grace + 5)
            for child in children:
                if child.returncode is None:
                    child.kill()
            if late:
                await asyncio.wait(late, timeout=5)
        if self._listener is not None:
            self._listener.close()


def _check_free(server: RelayedServer) -> None:
    host, _, port = server.target.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # as every server binds (a port whose last connections linger in TIME_WAIT is free); a listener fails it
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as error:
            raise ServeError(f"cannot listen on {server.target} ({server.key}): {error.strerror}. Is another server "
                             f"running there? Pick another port with {server.flag} (or {server.key}= in "
                             "--ts-config).") from None
