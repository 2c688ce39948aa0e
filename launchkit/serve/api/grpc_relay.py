"""A gRPC relay: a process of its own that runs grpc.aio's server and hands each call to the frontend.

gRPC's Python server costs about as much CPU per call as the whole of an HTTP request in the
frontend (its Cython layer and poller thread; docs/figures.md, "gRPC figures"), and on the
frontend's one event loop that made gRPC the frontend's limit. Here it runs on a core of its own:
this process accepts the calls, enforces the message limits, and forwards each call's method,
``authorization`` metadata and raw message bytes to the frontend over a Unix socket
(:mod:`launchkit.serve.api.grpc_frames`); the frontend decodes the message, runs the method with the
same code as before (so gRPC and HTTP requests still batch together) and sends back the encoded
answer or a status. A call the client cancels (or whose deadline passes) is cancelled in the
frontend too.

Started by the frontend (``python -m launchkit.serve.api.grpc_relay SOCKET``); it learns its
addresses and methods from the frontend, and ends when told to stop or when the frontend goes away.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc  # noqa: E402 - after the setting above, which gRPC reads when it is imported

from launchkit.serve.api.grpc_frames import (  # noqa: E402
    CODE, GRACE, Frame, FrameReader, FrameWriter, Kind, call_frame, frame, parse_end,
)

logger = logging.getLogger("launchkit.serve.grpc_relay")
STATUS = {code.value[0]: code for code in grpc.StatusCode}
GONE = Frame(Kind.END, 0, CODE.pack(grpc.StatusCode.UNAVAILABLE.value[0]) + b"the server is stopping")


def _authorization(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            return value
    return ""


class Relay(asyncio.Protocol):
    """This process's end of the socket to the frontend: calls out, answers back to whoever waits."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.writer: FrameWriter | None = None
        self.reader = FrameReader()
        self.waiting: dict[int, asyncio.Future[Frame] | asyncio.Queue[Frame]] = {}
        self.ids = itertools.count(1)
        loop = asyncio.get_running_loop()
        self.setup: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.stop: asyncio.Future[float] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.writer = FrameWriter(self.transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        for item in self.reader.feed(data):
            if item.kind is Kind.SETUP:
                self.setup.set_result(json.loads(item.payload))
            elif item.kind is Kind.STOP:
                if not self.stop.done():
                    self.stop.set_result(GRACE.unpack(item.payload)[0])
            else:
                self._deliver(item.call, item)

    def _deliver(self, call: int, item: Frame) -> None:
        waiter = self.waiting.get(call)
        if waiter is None:
            return  # a call already over (cancelled by its client): its late answer goes nowhere
        if isinstance(waiter, asyncio.Queue):
            waiter.put_nowait(item)
        elif not waiter.done():
            waiter.set_result(item)

    def connection_lost(self, exc: Exception | None) -> None:
        for call in list(self.waiting):
            self._deliver(call, GONE)
        if not self.setup.done():
            self.setup.set_exception(ConnectionError("the frontend closed the relay's socket before its set-up"))
        if not self.stop.done():
            self.stop.set_result(0.0)

    def send(self, data: bytes) -> None:
        if self.writer is not None:
            self.writer.send(data)

    def open(self, method: str, context: grpc.aio.ServicerContext, message: bytes | None,
             waiter: asyncio.Future[Frame] | asyncio.Queue[Frame]) -> int:
        call = next(self.ids)
        self.waiting[call] = waiter
        self.send(call_frame(call, method, _authorization(context), message))
        return call

    def close(self, call: int, finished: bool) -> None:
        self.waiting.pop(call, None)
        if not finished:
            self.send(frame(Kind.CANCEL, call))


async def _end(context: grpc.aio.ServicerContext, item: Frame) -> None:
    code, details = parse_end(item.payload)
    if code:
        await context.abort(STATUS.get(code, grpc.StatusCode.UNKNOWN), details)


def unary(relay: Relay, method: str) -> grpc.RpcMethodHandler:
    async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        call = relay.open(method, context, request, future)
        finished = False
        try:
            item = await future
            finished = True
        finally:
            relay.close(call, finished)
        if item.kind is Kind.ANSWER:
            return item.payload
        await _end(context, item)
        return b""  # an END with status OK and no answer: cannot happen for a unary method

    return grpc.unary_unary_rpc_method_handler(handle)


async def _answers(relay: Relay, method: str, context: grpc.aio.ServicerContext, message: bytes | None,
                   started: Callable[[int], Any] | None = None) -> AsyncIterator[bytes]:
    queue: asyncio.Queue[Frame] = asyncio.Queue()
    call = relay.open(method, context, message, queue)
    pumping = started(call) if started is not None else None
    finished = False
    try:
        while True:
            item = await queue.get()
            if item.kind is Kind.MESSAGE:
                yield item.payload
                continue
            finished = True
            await _end(context, item)
            return
    finally:
        relay.close(call, finished)
        if pumping is not None:
            pumping.cancel()


def unary_stream(relay: Relay, method: str) -> grpc.RpcMethodHandler:
    async def handle(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        async for answer in _answers(relay, method, context, request):
            yield answer

    return grpc.unary_stream_rpc_method_handler(handle)


def stream_stream(relay: Relay, method: str) -> grpc.RpcMethodHandler:
    async def handle(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        def pump(call: int) -> asyncio.Task[None]:
            async def forward() -> None:
                async for message in requests:
                    relay.send(frame(Kind.MESSAGE, call, message))
                relay.send(frame(Kind.HALF_CLOSE, call))

            return asyncio.ensure_future(forward())

        async for answer in _answers(relay, method, context, None, pump):
            yield answer

    return grpc.stream_stream_rpc_method_handler(handle)


SHAPES = {"unary": unary, "unary_stream": unary_stream, "stream_stream": stream_stream}


async def _serve(relay: Relay, setup: dict[str, Any]) -> list[grpc.aio.Server]:
    servers = []
    for listener in setup["servers"]:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", setup["max_receive"]),
                                          ("grpc.max_send_message_length", setup["max_send"]),
                                          ("grpc.so_reuseport", 1 if setup["reuse_port"] else 0)])
        services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for path, shape in listener["methods"].items():
            service, name = path.strip("/").split("/")
            services.setdefault(service, {})[name] = SHAPES[shape](relay, path)
        for service, methods in services.items():
            server.add_registered_method_handlers(service, methods)
        try:
            server.add_insecure_port(listener["target"])
        except RuntimeError as error:
            raise OSError(f"cannot listen on {listener['target']} ({listener['key']}): {str(error).rstrip('.')}. Is another server "
                          f"running there? Pick another port with {listener['flag']} (or {listener['key']}= in "
                          "--ts-config).") from None
        await server.start()
        servers.append(server)
    return servers


async def main(socket_path: str) -> int:
    loop = asyncio.get_running_loop()
    _transport, relay = await loop.create_unix_connection(Relay, socket_path)
    relay.send(frame(Kind.HELLO, 0, str(os.getpid()).encode()))
    def stop_now() -> None:
        if not relay.stop.done():
            relay.stop.set_result(0.0)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop_now)
    try:
        setup = await relay.setup
        servers = await _serve(relay, setup)
    except (OSError, ConnectionError) as error:
        relay.send(frame(Kind.FAILED, 0, str(error).encode()))
        if relay.writer is not None:
            relay.writer.flush()
        return 1
    relay.send(frame(Kind.READY, 0))
    grace = await relay.stop
    await asyncio.gather(*(server.stop(grace) for server in servers))
    return 0


if __name__ == "__main__":
    # the frontend decides when this process stops (it runs in a session of its own: no terminal's Ctrl-C)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s gRPC relay: %(message)s")
    from launchkit.core import eventloop

    sys.exit(eventloop.run(main(sys.argv[1])))
