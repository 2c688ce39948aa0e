"""The uvicorn adjustments: the private class they subclass still has the shape they need."""

from __future__ import annotations

import asyncio
import socket

import pytest

from launchkit.serve.api.http import ForegroundServer, http_protocol

CHANGED = ("uvicorn's private HttpToolsProtocol changed shape ({what}); launchkit/serve/api/http.py was written "
           "for uvicorn 0.30-0.55: pin uvicorn below the release that changed it, or update http.py")


def test_the_subclassed_protocol_has_what_the_subclass_uses():
    import inspect

    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    for method in ("connection_made", "on_headers_complete"):
        assert callable(getattr(HttpToolsProtocol, method, None)), CHANGED.format(what=f"no {method}()")
    source = inspect.getsource(HttpToolsProtocol)
    for attribute in ("self.cycle", "self.parser", "keep_alive"):
        assert attribute in source, CHANGED.format(what=f"uses no {attribute}; uvicorn {uvicorn.__version__}")


async def _echo(scope, receive, send):
    if scope["type"] != "http":
        return
    await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2"), (b"connection", b"keep-alive")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_http10_keep_alive_connections_stay_open():
    """ab -k speaks HTTP/1.0 with Connection: keep-alive; plain uvicorn closes after each answer."""
    import uvicorn

    async def scenario() -> list[bytes]:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        server = ForegroundServer(uvicorn.Config(_echo, http=http_protocol(), lifespan="off",
                                                 log_level="warning"))
        task = asyncio.ensure_future(server.serve(sockets=[listener]))
        while not server.started:
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answers = []
        for _ in range(2):  # the same connection twice
            writer.write(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            answers.append(head.split(b"\r\n", 1)[0] + b" " + await reader.readexactly(2))
        writer.close()
        server.request_exit()
        await asyncio.wait_for(task, 10)
        return answers

    try:
        answers = asyncio.run(scenario())
    except (asyncio.IncompleteReadError, ConnectionError) as error:
        pytest.fail(CHANGED.format(what=f"an HTTP/1.0 keep-alive connection was closed: {error!r}"))
    assert answers == [b"HTTP/1.1 200 OK ok"] * 2
