"""uvicorn, adjusted: HTTP/1.0 keep-alive, one send per response, signals owned by launchkit.

HTTP stack: uvicorn with its httptools parser on uvloop, driving bare ASGI apps. Chosen by a
comparison with aiohttp that was not kept as a script (so no figure is claimed for it), and a
framework layer on top (Starlette, FastAPI) costs per request what this server exists to save.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import weakref
from collections.abc import Callable
from typing import Any

from launchkit.core.errors import ServeError
from launchkit.serve.addresses import Address
from launchkit.serve.limits import Limits
from launchkit.serve.wire import error_body


def bind(address: Address, key: str = "inference_address", flag: str = "--inference-address") -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address.host, address.port))
    except OSError as error:
        sock.close()
        raise ServeError(f"cannot listen on {address} ({key}): {error.strerror}. Is another server running there? "
                         f"Pick another port with {flag} (or {key}= in --ts-config).") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def http_protocol(limits: Limits = Limits()) -> type:
    """uvicorn's httptools protocol, keeping HTTP/1.0 keep-alive connections and enforcing ``limits``.

    Keep-alive: uvicorn closes every HTTP/1.0 connection, even with ``Connection: keep-alive``. ab
    -k (the tool TorchServe's benchmarks use) speaks exactly that, so each request paid a new TCP
    connection, a large share of the frontend's time per request. The app answers such requests
    with ``Connection: keep-alive`` and a content-length.

    Limits (uvicorn's httptools side has none): the request line and headers may take at most
    ``max_header_bytes`` and ``max_headers``, else 431; a head must arrive within
    ``header_timeout_s`` of the connection (or of the previous answer), a body within
    ``body_timeout_s`` of its head, else 408 and the connection closes. Deadlines are checked by
    one sweep a second over the connections, not a timer per request: a timer armed and cancelled
    twice per request is work on every request for an event that almost never happens.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    max_bytes, max_headers = limits.max_header_bytes, limits.max_headers
    head_timeout, body_timeout = limits.header_timeout_s, limits.body_timeout_s

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        transport: CoalescingTransport  # type: ignore[assignment]  # uvicorn's transport, wrapped
        _deadline: float | None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            # the wrapper stands in for asyncio's transport (what it does not define it forwards)
            super().connection_made(CoalescingTransport(transport, self._start_lingering))  # type: ignore[arg-type]
            self._in_head = True  # between requests too: the next bytes start a head
            self._head_bytes = 0
            self._heads_done = 0  # heads parsed on this connection: tells a chunk that ended one
            self._refusal: tuple[int, str, str] | None = None
            self._deadline = self.loop.time() + head_timeout
            self._waiting_for = "the request headers"
            _Sweeper.watch(self)

        def data_received(self, data: bytes) -> None:
            if self._refusal is not None:
                return
            in_head, heads_done = self._in_head, self._heads_done
            if in_head and self._deadline is None:  # a new request on a kept-alive connection
                self._deadline = self.loop.time() + head_timeout
                self._waiting_for = "the request headers"
            super().data_received(data)
            # Raw bytes count towards the limit only when the whole chunk was head: it began in a head
            # and no head ended inside it. A chunk that ended a head (and perhaps held a body, a whole
            # request, the start of a pipelined one) is judged by the exact size of the head it ended,
            # in on_headers_complete; counting its bytes refused every body that arrived in one read
            # with its headers (curl --data-binary, urllib). A head begun mid-chunk is counted from its
            # next chunk on: the guard against endless heads then trails by at most one read.
            if self._refusal is None and in_head and self._in_head and heads_done == self._heads_done:
                self._head_bytes += len(data)
                if self._head_bytes > max_bytes:
                    self._refuse(431, "RequestHeaderFieldsTooLargeException",
                                 f"the request line and headers are larger than max_header_size={max_bytes} bytes")
            if self._refusal is not None:
                self._send_refusal()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True
            self._head_bytes = 0

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._heads_done += 1
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if len(self.headers) > max_headers:
                return self._refuse(431, "RequestHeaderFieldsTooLargeException",
                                    f"the request has {len(self.headers)} headers; max_headers={max_headers}")
            if size > max_bytes:
                return self._refuse(431, "RequestHeaderFieldsTooLargeException",
                                    f"the request line and headers are larger than max_header_size={max_bytes} bytes")
            self._deadline = self.loop.time() + body_timeout
            self._waiting_for = "the request body"
            super().on_headers_complete()
            cycle = getattr(self, "cycle", None)
            if cycle is not None and self.parser.get_http_version() == "1.0" and self.parser.should_keep_alive():
                cycle.keep_alive = True

        def on_body(self, body: bytes) -> None:
            if self._refusal is None and not self.transport.lingering:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if self.transport.lingering:  # the body of a request already answered has all arrived
                return self.transport.close_now()
            if self._refusal is not None:
                return
            self._deadline = None  # the app has the whole request; uvicorn's keep-alive timeout takes over
            self._in_head = True
            super().on_message_complete()

        def send_400_response(self, msg: str) -> None:
            if self._refusal is None:  # else bytes after a refused head: the refusal is the answer
                super().send_400_response(msg)

        def _refuse(self, status: int, kind: str, message: str) -> None:
            self._refusal = (status, kind, message)

        def _send_refusal(self) -> None:
            status, kind, message = self._refusal  # type: ignore[misc]
            body = error_body(status, kind, message)
            reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
            if not self.transport.is_closing():
                self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                                     b"connection: close\r\n\r\n%s" % (status, reason, len(body), body))
                (self.transport.close_now if status == 408 else self.transport.close)()

        def _start_lingering(self) -> bool:
            """Asked on close: if the client may still be sending this request's body (or head, after
            a 431), give it LINGER_S to finish and say so (the transport then reads and drops)."""
            if self._in_head and (self._refusal is None or self._refusal[0] != 431):
                return False
            self._deadline = self.loop.time() + LINGER_S
            return True

        def timed_out(self) -> None:
            """The sweep found this connection past its deadline: 408, unless an answer has begun."""
            cycle = getattr(self, "cycle", None)
            waiting_for = self._waiting_for
            if self._in_head or cycle is None or not cycle.response_started:
                self._refuse(408, "RequestTimeoutException",
                             f"{waiting_for} did not arrive in time (header_timeout={head_timeout:g} s, "
                             f"body_timeout={body_timeout:g} s)")
                self._send_refusal()
            elif not self.transport.is_closing():
                self.transport.close()

    return GuardedHttpToolsProtocol


class _Sweeper:
    """Once a second, closes the connections of this event loop that are past their deadline."""

    _connections: "weakref.WeakSet[Any]" = None  # type: ignore[assignment]
    _task: asyncio.Task[None] | None = None

    @classmethod
    def watch(cls, protocol: Any) -> None:
        loop = asyncio.get_running_loop()
        if cls._task is None or cls._task.done() or cls._task.get_loop() is not loop:
            cls._connections = weakref.WeakSet()
            cls._task = loop.create_task(cls._sweep())
        cls._connections.add(protocol)

    @classmethod
    async def _sweep(cls) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            now = loop.time()
            for protocol in list(cls._connections):
                deadline = protocol._deadline
                if deadline is None or now <= deadline:
                    continue
                if protocol.transport.lingering:
                    protocol.transport.close_now()
                elif protocol._refusal is None and not protocol.transport.is_closing():
                    protocol.timed_out()


LINGER_S = 5.0  # longest a closed connection keeps reading a body nobody will use (nginx's lingering_timeout)


class CoalescingTransport:
    """Joins uvicorn's two writes per response (head, then body) into one send, and closes lingering.

    uvicorn writes the status line and headers, then the body, as separate writes; on uvloop each
    is its own send() and TCP segment, so a small response cost two syscalls here and two wake-ups
    at the client. The head is held until the body follows (in the same turn of the event loop,
    or flushed at the end of it).

    Lingering close: an answer given before the request's body has all arrived (413 on the declared
    size, 431, 401) followed by close() would reset the connection while the client still writes,
    and a client that writes its whole body before reading (urllib, requests, http.client) then sees
    "connection reset" instead of the answer. So such a close waits: the rest of the body is read and
    dropped until it ends, the client closes, or ``LINGER_S`` passes (then the connection closes).
    """

    __slots__ = ("_transport", "_pending", "_loop", "_start_lingering", "lingering")

    def __init__(self, transport: Any, start_lingering: Callable[[], bool] | None = None) -> None:
        self._transport = transport
        self._pending: bytes | None = None
        self._loop = asyncio.get_running_loop()
        self._start_lingering = start_lingering  # the protocol's: may this close wait for the body?
        self.lingering = False

    def write(self, data: bytes) -> None:
        if self._pending is None:
            if data.endswith(b"\r\n\r\n"):  # a head: wait for its body
                self._pending = data
                self._loop.call_soon(self.flush)
            else:
                self._transport.write(data)
            return
        pending, self._pending = self._pending, None
        self._transport.write(pending + data)

    def flush(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._transport.write(pending)

    def close(self) -> None:
        self.flush()
        if self.lingering:
            return
        if self._start_lingering is not None and not self._transport.is_closing() and self._start_lingering():
            self.lingering = True
            self._transport.resume_reading()  # uvicorn pauses reading while a body waits for the app
            return
        self._transport.close()

    def close_now(self) -> None:
        self.lingering = False
        self._transport.close()

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class ForegroundServer:
    """uvicorn's Server with launchkit owning the signals (so workers stop after HTTP drains)."""

    def __new__(cls, config: Any) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):  # noqa: ANN202 - uvicorn's signature
                yield

            def request_exit(self) -> None:
                if self.should_exit:
                    self.force_exit = True
                self.should_exit = True

        return Server(config)
