"""The inference API as a bare ASGI application (no framework: every microsecond here is per request).

Routes: ``GET /ping``, ``GET /v2/health/live``, ``GET /v2/health/ready``,
``POST /predictions/{model}[/{version}]``. Errors are JSON ``{"code", "type", "message"}``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from typing import Any, Awaitable, Callable

from launchkit.serve.batcher import NoWorkerReady, QueueFull
from launchkit.serve.http_errors import error_body
from launchkit.serve.protocol import ItemRequest, ItemResult
from launchkit.serve.registry import ModelNotFound, Registry

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
JSON = b"application/json"
RETRY_AFTER_S = b"1"


class BodyTooLarge(Exception):
    pass


class InferenceApp:
    def __init__(self, registry: Registry, max_request_size: int, max_response_size: int = 6_553_500) -> None:
        self.registry = registry
        self.max_request_size = max_request_size
        self.max_response_size = max_response_size
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}-"

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request_id = self._id_prefix + str(next(self._ids))
        if scope["http_version"] == "1.0" and any(name == b"connection" and value.lower() == b"keep-alive"
                                                  for name, value in scope["headers"]):
            send = _with_keep_alive(send)
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith("/predictions/"):
            if method not in ("POST", "PUT"):
                await _json(send, 405, error_body(405, "MethodNotAllowedException", f"use POST for {path}"), request_id)
                return
            await self._predict(scope, receive, send, path, request_id)
        elif path == "/ping" and method == "GET":
            await _json(send, 200, b'{"status": "Healthy"}', request_id)
        elif path == "/v2/health/live" and method == "GET":
            await _json(send, 200, b'{"live": true}', request_id)
        elif path.startswith("/v2/models/") and method == "GET":
            await self._metadata(send, path, request_id)
        elif path == "/v2/health/ready" and method == "GET":
            ready = self.registry.all_ready()
            await _json(send, 200 if ready else 503, json.dumps({"ready": ready}).encode(), request_id)
        else:
            await _json(send, 404, error_body(404, "ResourceNotFoundException", f"no such endpoint: {method} {path}"),
                        request_id)

    async def _metadata(self, send: Send, path: str, request_id: str) -> None:
        """KServe v2 model metadata, plus the settings as applied (``launchkit`` key)."""
        parts = path[len("/v2/models/"):].strip("/").split("/")
        version = parts[2] if len(parts) == 3 and parts[1] == "versions" else None
        try:
            model = self.registry.find(parts[0], version)
        except ModelNotFound as error:
            await _json(send, 404, error_body(404, error.kind, str(error)), request_id)
            return
        settings = model.settings
        body = {
            "name": model.name, "versions": sorted(self.registry.models[model.name]), "platform": "launchkit",
            "inputs": [], "outputs": [],
            "launchkit": {
                "version": model.version, "batch_size": settings.batch_size,
                "max_batch_delay_ms": settings.max_batch_delay_ms, "job_queue_size": settings.job_queue_size,
                "response_timeout_s": settings.response_timeout_s, "ready": model.ready,
                "workers": [{"id": w.worker_id, "pid": w.pid, "state": w.state, "cpus": list(w.launch.cpus),
                             "threads": w.launch.threads, "env": {k: v for k, v in w.launch.env.items()
                                                                 if not k.startswith("LAUNCHKIT_")},
                             **w.info} for w in model.workers],
            },
        }
        await _json(send, 200, json.dumps(body).encode(), request_id)

    async def _predict(self, scope: dict[str, Any], receive: Receive, send: Send, path: str, request_id: str) -> None:
        parts = path[len("/predictions/"):].strip("/").split("/")
        if not parts[0] or len(parts) > 2:
            await _json(send, 404, error_body(404, "ResourceNotFoundException",
                                              "expected /predictions/{model}[/{version}]"), request_id)
            return
        try:
            model = self.registry.find(parts[0], parts[1] if len(parts) == 2 else None)
        except ModelNotFound as error:
            await _json(send, 404, error_body(404, error.kind, str(error)), request_id)
            return
        content_type = ""
        headers: list[tuple[str, str]] = []
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                declared = int(value) if value.isdigit() else None
            headers.append((name.decode("latin-1"), value.decode("latin-1")))
        try:
            if declared is not None and declared > self.max_request_size:
                raise BodyTooLarge
            body = await _read_body(receive, self.max_request_size)
        except BodyTooLarge:
            await _json(send, 413, error_body(413, "RequestEntityTooLargeException",
                                              f"request body is larger than max_request_size={self.max_request_size} "
                                              "bytes"), request_id)
            return
        try:
            future = model.queue.submit(ItemRequest(request_id, body, content_type, headers))
        except QueueFull as error:
            await _json(send, 503, error_body(503, "ServiceUnavailableException", str(error)), request_id, retry=True)
            return
        except NoWorkerReady as error:
            await _json(send, 503, error_body(503, "ServiceUnavailableException", str(error)), request_id, retry=True)
            return
        try:
            result: ItemResult = await future
        except asyncio.CancelledError:
            future.cancel()  # client went away: the batcher skips it if it is still queued
            raise
        if len(result.body) > self.max_response_size:
            await _json(send, 500, error_body(500, "InternalServerException",
                                              f"the model's response ({len(result.body)} bytes) is larger than "
                                              f"max_response_size={self.max_response_size}"), request_id)
            return
        # An explicit content-length keeps HTTP/1.0 keep-alive clients (ab -k) on one connection;
        # without it uvicorn answers chunked and must close the connection after every request.
        response_headers = [(b"content-type", result.content_type.encode("latin-1")),
                            (b"content-length", str(len(result.body)).encode()),
                            (b"x-request-id", request_id.encode())]
        response_headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in result.headers]
        if result.status == 503:
            response_headers.append((b"retry-after", RETRY_AFTER_S))
        await send({"type": "http.response.start", "status": result.status, "headers": response_headers})
        await send({"type": "http.response.body", "body": result.body})


def _with_keep_alive(send: Send) -> Send:
    """HTTP/1.0 clients reuse a connection only if the response says keep-alive."""

    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message["headers"], (b"connection", b"keep-alive")]}
        await send(message)

    return wrapped


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise asyncio.CancelledError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _json(send: Send, status: int, body: bytes, request_id: str, retry: bool = False) -> None:
    headers = [(b"content-type", JSON), (b"content-length", str(len(body)).encode()),
               (b"x-request-id", request_id.encode())]
    if retry:
        headers.append((b"retry-after", RETRY_AFTER_S))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
