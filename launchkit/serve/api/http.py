"""uvicorn, adjusted: HTTP/1.0 keep-alive, one send per response, signals owned by launchkit.

HTTP stack: uvicorn with its httptools parser on uvloop, driving bare ASGI apps. Chosen by
measurement on the 2-core development machine (see README, "Serving"): a bare uvicorn/httptools
echo answers about 14k req/s there against aiohttp's 13k, and a framework layer on top (Starlette,
FastAPI) costs per request what this server exists to save.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from launchkit.core.errors import ServeError
from launchkit.serve.settings import Address


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



def keep_alive_protocol() -> type:
    """uvicorn's httptools protocol, also keeping HTTP/1.0 connections that ask for keep-alive.

    uvicorn closes every HTTP/1.0 connection, even with ``Connection: keep-alive``. ab -k (the
    tool TorchServe's benchmarks use) speaks exactly that, so each request paid a new TCP
    connection: about 30% of the frontend's time per request went to connection set-up. The app
    answers such requests with ``Connection: keep-alive`` and a content-length.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class KeepAliveHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(CoalescingTransport(transport))

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            cycle = getattr(self, "cycle", None)
            if cycle is not None and self.parser.get_http_version() == "1.0" and self.parser.should_keep_alive():
                cycle.keep_alive = True

    return KeepAliveHttpToolsProtocol


class CoalescingTransport:
    """Joins uvicorn's two writes per response (head, then body) into one send.

    uvicorn writes the status line and headers, then the body, as separate writes; on uvloop each
    is its own send() and TCP segment, so a small response cost two syscalls here and two wake-ups
    at the client. The head is held until the body follows (in the same turn of the event loop,
    or flushed at the end of it).
    """

    __slots__ = ("_transport", "_pending", "_loop")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._pending: bytes | None = None
        self._loop = asyncio.get_running_loop()

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
        self._transport.close()

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
