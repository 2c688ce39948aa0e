"""The inference API as a bare ASGI application (no framework: every microsecond here is per request).

Routes: ``GET /ping``, ``POST /predictions/{model}[/{version}]`` (errors are TorchServe's JSON
``{"code", "type", "message"}``), and KServe v2: ``GET /v2``, ``GET /v2/health/live|ready``,
``GET /v2/models/{model}[/versions/{v}][/ready]``, ``POST /v2/models/{model}[/versions/{v}]/infer``
(errors are ``{"error": message}``). With an inference token set, everything but ``/ping`` and
``/v2/health/*`` needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from typing import Any, Awaitable, Callable

from launchkit.serve.batcher import NoWorkerReady, QueueFull
from launchkit.serve.http_errors import bearer_token_ok, error_body, unauthorized
from launchkit.serve.kserve import V2Error, build_response, parse_infer
from launchkit.serve.protocol import ItemRequest, ItemResult
from launchkit.serve.registry import ModelNotFound, Registry, ServedModel

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
JSON = b"application/json"
RETRY_AFTER_S = b"1"


class BodyTooLarge(Exception):
    pass


class InferenceApp:
    def __init__(self, registry: Registry, max_request_size: int, max_response_size: int = 6_553_500,
                 metrics: Any = None, token: str | None = None) -> None:
        self.registry = registry
        self.max_request_size = max_request_size
        self.max_response_size = max_response_size
        self.metrics = metrics
        self.token = token
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
            if self.token and not bearer_token_ok(scope, self.token):
                await self._unauthorized(send, request_id)
            elif method not in ("POST", "PUT"):
                await _json(send, 405, error_body(405, "MethodNotAllowedException", f"use POST for {path}"), request_id)
            else:
                await self._predict(scope, receive, send, path, request_id)
        elif path == "/ping" and method == "GET":
            await _json(send, 200, b'{"status": "Healthy"}', request_id)
        elif path == "/v2/health/live" and method == "GET":
            await _json(send, 200, b'{"live": true}', request_id)
        elif path == "/v2/health/ready" and method == "GET":
            ready = self.registry.all_ready()
            await _json(send, 200 if ready else 503, json.dumps({"ready": ready}).encode(), request_id)
        elif self.token and not bearer_token_ok(scope, self.token):
            await self._unauthorized(send, request_id)
        elif path.rstrip("/") == "/v2" and method == "GET":
            from launchkit import __version__

            await _json(send, 200, json.dumps({"name": "launchkit", "version": __version__,
                                               "extensions": []}).encode(), request_id)
        elif path.startswith("/v2/models/"):
            await self._v2_model(scope, receive, send, path, method, request_id)
        else:
            await _json(send, 404, error_body(404, "ResourceNotFoundException", f"no such endpoint: {method} {path}"),
                        request_id)

    async def _unauthorized(self, send: Send, request_id: str) -> None:
        error = unauthorized("inference")
        await _json(send, 401, error.body(), request_id, extra=error.headers)

    async def _v2_model(self, scope: dict[str, Any], receive: Receive, send: Send, path: str, method: str,
                        request_id: str) -> None:
        """KServe v2 model routes: metadata, readiness and infer, by model and optional version."""
        parts = [part for part in path[len("/v2/models/"):].split("/") if part]
        action = parts.pop() if parts and parts[-1] in ("ready", "infer") and len(parts) in (2, 4) else None
        version = None
        if len(parts) == 3 and parts[1] == "versions":
            version = parts[2]
        elif len(parts) != 1:
            await _json(send, 404, json.dumps({"error": f"no such endpoint: {method} {path}"}).encode(), request_id)
            return
        try:
            model = self.registry.find(parts[0], version)
        except ModelNotFound as error:
            await _json(send, 404, json.dumps({"error": str(error)}).encode(), request_id)
            return
        expected = "POST" if action == "infer" else "GET"
        if method != expected:
            await _json(send, 405, json.dumps({"error": f"use {expected} for {path}"}).encode(), request_id)
        elif action == "ready":
            await _json(send, 200 if model.ready else 503,
                        json.dumps({"name": model.name, "ready": model.ready}).encode(), request_id)
        elif action == "infer":
            await self._v2_infer(model, scope, receive, send, request_id)
        else:
            await self._metadata(send, model, request_id)

    async def _metadata(self, send: Send, model: ServedModel, request_id: str) -> None:
        """KServe v2 model metadata, plus the settings as applied (``launchkit`` key)."""
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
        started = time.perf_counter()
        parts = path[len("/predictions/"):].strip("/").split("/")
        if not parts[0] or len(parts) > 2:
            await _json(send, 404, error_body(404, "ResourceNotFoundException",
                                              "expected /predictions/{model}[/{version}]"), request_id)
            return
        try:
            model = self.registry.find(parts[0], parts[1] if len(parts) == 2 else None)
        except ModelNotFound as error:
            if self.metrics is not None:
                self.metrics.unknown_model(404)
            await _json(send, 404, error_body(404, error.kind, str(error)), request_id)
            return
        status = await self._answer_predict(model, scope, receive, send, request_id)
        if model.metrics is not None:
            model.metrics.request_done(status, time.perf_counter() - started)

    async def _answer_predict(self, model: ServedModel, scope: dict[str, Any], receive: Receive, send: Send,
                              request_id: str) -> int:
        """Queue the request, await its result, send it; returns the status sent."""
        content_type = ""
        declared = b""
        headers: list[tuple[str, str]] = []
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                declared = value
            headers.append((name.decode("latin-1"), value.decode("latin-1")))
        try:
            body = await self._body(declared, receive)
            future = self._submit(model, ItemRequest(request_id, body, content_type, headers))
        except _Refused as refusal:
            await _json(send, refusal.status, error_body(refusal.status, refusal.kind, refusal.message), request_id,
                        retry=refusal.status == 503)
            return refusal.status
        try:
            result: ItemResult = await future
        except asyncio.CancelledError:
            future.cancel()  # client went away: the batcher skips it if it is still queued
            raise
        if len(result.body) > self.max_response_size:
            await _json(send, 500, error_body(500, "InternalServerException",
                                              f"the model's response ({len(result.body)} bytes) is larger than "
                                              f"max_response_size={self.max_response_size}"), request_id)
            return 500
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
        return result.status

    async def _body(self, declared: bytes, receive: Receive) -> bytes:
        """The request body (``declared``: its content-length header, b"" if none), within max_request_size."""
        if declared.isdigit() and int(declared) > self.max_request_size:
            raise self._too_large()
        try:
            return await _read_body(receive, self.max_request_size)
        except BodyTooLarge:
            raise self._too_large() from None

    def _too_large(self) -> _Refused:
        return _Refused(413, "RequestEntityTooLargeException",
                        f"request body is larger than max_request_size={self.max_request_size} bytes")

    @staticmethod
    def _submit(model: ServedModel, item: ItemRequest) -> asyncio.Future[ItemResult]:
        try:
            return model.queue.submit(item)
        except (QueueFull, NoWorkerReady) as error:
            raise _Refused(503, "ServiceUnavailableException", str(error)) from None

    async def _v2_infer(self, model: ServedModel, scope: dict[str, Any], receive: Receive, send: Send,
                        request_id: str) -> None:
        """Split the tensors into rows, queue each row as an item (so rows batch), join the outputs."""
        started = time.perf_counter()
        futures: list[asyncio.Future[ItemResult]] = []
        try:
            declared = next((value for name, value in scope["headers"] if name == b"content-length"), b"")
            request = parse_infer(await self._body(declared, receive))
            items = [ItemRequest(f"{request_id}.{index}", body, content_type, [])
                     for index, (body, content_type) in enumerate(request.rows)]
            try:
                futures = model.queue.submit_many(items)
            except (QueueFull, NoWorkerReady) as error:
                raise _Refused(503, "ServiceUnavailableException", str(error)) from None
            results = await asyncio.gather(*futures)
            status, payload = build_response(model.name, model.version, request.request_id, request.output_name,
                                             list(results))
        except _Refused as refusal:
            status, payload = refusal.status, json.dumps({"error": refusal.message}).encode()
        except V2Error as error:
            status, payload = error.status, error.body()
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        if status >= 400:
            for future in futures:
                future.cancel()  # rows still queued are not run
        await _json(send, status, payload, request_id, retry=status == 503)
        if model.metrics is not None:
            model.metrics.request_done(status, time.perf_counter() - started)


class _Refused(Exception):
    """A request turned away before it reached a worker (413, 503)."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


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


async def _json(send: Send, status: int, body: bytes, request_id: str, retry: bool = False,
                extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    headers = [(b"content-type", JSON), (b"content-length", str(len(body)).encode()),
               (b"x-request-id", request_id.encode()), *extra]
    if retry:
        headers.append((b"retry-after", RETRY_AFTER_S))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
