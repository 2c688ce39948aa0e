"""The inference API as a bare ASGI application (no framework: every microsecond here is per request).

Routes (declared in :mod:`launchkit.serve.api.routes`, described by ``OPTIONS /``): ``GET /ping``,
``GET /v2/health/live|ready``, ``POST|PUT /predictions/{model}[/{version}]`` (errors are
TorchServe's JSON ``{"code", "type", "message"}``), the KServe v2 routes under ``/v2``
(:mod:`launchkit.serve.api.kserve`) and the KServe v1 / TF Serving ones under ``/v1/models``
(:mod:`launchkit.serve.api.kserve_v1`), whose errors are ``{"error": message}``. With an inference
token set, everything but ``/ping``, ``/v2/health/*`` and the API description needs
``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from typing import TYPE_CHECKING, Any

from launchkit.core.errors import LaunchkitError, NotFound, TooLarge, Unauthorized
from launchkit.serve.api.asgi import Message, Receive, Scope, Send
from launchkit.serve.api.kserve import KServeRoutes
from launchkit.serve.api.kserve_v1 import V1Routes
from launchkit.serve.api.responses import RETRY_AFTER_S, bearer_token_ok, kserve_error, send_json, torchserve_error
from launchkit.serve.api.routes import INFERENCE_ROUTES, ErrorShape, Route, Router
from launchkit.serve.scheduling.registry import Registry, ServedModel
from launchkit.serve.wire import ItemRequest, ItemResult, error_body

if TYPE_CHECKING:  # the Prometheus side is not needed to serve
    from launchkit.serve.api.metrics import ServerMetrics

ROUTER = Router(INFERENCE_ROUTES)
CREDENTIALS = frozenset({b"authorization", b"proxy-authorization", b"cookie"})


class InferenceApp:
    def __init__(self, registry: Registry, max_request_size: int, max_response_size: int = 6_553_500,
                 metrics: ServerMetrics | None = None, token: str | None = None, max_tensor_elements: int = 16 * 2**20) -> None:
        self.registry = registry
        self.max_request_size = max_request_size
        self.max_response_size = max_response_size
        self.metrics = metrics
        self.token = token
        self.kserve = KServeRoutes(registry, self.read_body, max_tensor_elements, max_response_size)
        self.kserve_v1 = V1Routes(registry, self.read_body)
        self.shutting_down = False  # set on SIGINT/SIGTERM; requests cut off by --graceful-timeout get a 503
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}-"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request_id = self._id_prefix + str(next(self._ids))
        if scope["http_version"] == "1.0" and any(name == b"connection" and value.lower() == b"keep-alive"
                                                  for name, value in scope["headers"]):
            send = _with_keep_alive(send)
        path: str = scope["path"]
        route: Route | None = None
        try:
            try:
                route, params = ROUTER.match(scope["method"], path)
            except LaunchkitError:
                if self.token and not bearer_token_ok(scope, self.token):
                    raise Unauthorized("inference") from None  # without the token, not even which endpoints exist
                raise
            if route.token and self.token and not bearer_token_ok(scope, self.token):
                raise Unauthorized("inference")
            await self._dispatch(route, params, scope, receive, send, request_id)
        except LaunchkitError as error:
            shape = route.errors if route is not None else ROUTER.error_shape(path)
            status, body, headers = (kserve_error if shape is ErrorShape.KSERVE else torchserve_error)(error)
            await send_json(send, status, body, request_id, headers)
        except asyncio.CancelledError:
            if not self.shutting_down:
                raise  # the client went away
            # uvicorn cancels what is still running when --graceful-timeout runs out: say so, in JSON
            message = "the server is shutting down: this request outlasted --graceful-timeout and was not completed"
            body = json.dumps({"error": message}).encode() if path.startswith(("/v1/", "/v2")) else \
                error_body(503, "ServiceUnavailableException", message)
            try:
                await send_json(send, 503, body, request_id, ((b"connection", b"close"),))
            except Exception:  # noqa: BLE001 - the response may have started already; nothing more to say
                pass

    async def _dispatch(self, route: Route, params: dict[str, str], scope: Scope, receive: Receive, send: Send,
                        request_id: str) -> None:
        name, version = params.get("model_name", ""), params.get("model_version")
        match route.operation:
            case "predictions":
                await self._predict(scope, receive, send, name, version, request_id)
            case "infer" | "model_metadata" | "model_ready" | "model_config" | "model_statistics":
                await self.kserve.model_route(route.operation, self.registry.find(name, version), scope, receive,
                                              send, request_id)
            case "v1_predict":
                await self.kserve_v1.predict(self.registry.find(name, version), scope, receive, send, request_id)
            case "v1_status":
                await send_json(send, 200, self.kserve_v1.status(self.registry.find(name, version), version),
                                request_id)
            case "ping":
                await self._ping(send, request_id)
            case "live" | "ready" | "server_metadata" | "all_statistics":
                await self.kserve.server_route(route.operation, send, request_id)
            case "api_description":
                from launchkit.serve.api.openapi import document

                await send_json(send, 200, document("inference"), request_id)
            case _:
                raise AssertionError(f"route {route.operation} has no handler")  # the table and this match disagree

    async def _ping(self, send: Send, request_id: str) -> None:
        """TorchServe's answer: 200 Healthy, or 500 Unhealthy when a model is marked failed (it could not be
        loaded max_load_failures times in a row), naming each failed model and why."""
        failures = self.registry.failures()
        if not failures:
            await send_json(send, 200, b'{"status": "Healthy"}', request_id)
        else:
            await send_json(send, 500, {"status": "Unhealthy", "failedModels": failures}, request_id)

    async def _predict(self, scope: Scope, receive: Receive, send: Send, name: str, version: str | None,
                       request_id: str) -> None:
        started = time.perf_counter()
        try:
            model = self.registry.find(name, version)
        except NotFound:
            if self.metrics is not None:
                self.metrics.unknown_model(404)
            raise
        status = await self._answer_predict(model, scope, receive, send, request_id)
        if model.metrics is not None:
            model.metrics.request_done(status, time.perf_counter() - started)

    async def _answer_predict(self, model: ServedModel, scope: Scope, receive: Receive, send: Send,
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
            elif name in CREDENTIALS:
                continue  # the client's credentials are the server's business, not the handler's
            headers.append((name.decode("latin-1"), value.decode("latin-1")))
        try:
            body = await self.read_body(declared, receive)
            future = model.queue.submit(ItemRequest(request_id, body, content_type, headers))
        except LaunchkitError as error:  # too large, queue full, no worker ready
            status, body, extra = torchserve_error(error)
            await send_json(send, status, body, request_id, extra)
            return status
        try:
            result: ItemResult = await future
        except asyncio.CancelledError:
            future.cancel()  # client went away: the batcher skips it if it is still queued
            raise
        if len(result.body) > self.max_response_size:
            await send_json(send, 500, error_body(500, "InternalServerException",
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

    async def read_body(self, declared: bytes, receive: Receive) -> bytes:
        """The request body (``declared``: its content-length header, b"" if none), within max_request_size."""
        limit = self.max_request_size
        if declared.isdigit() and int(declared) > limit:
            raise self._too_large()
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise asyncio.CancelledError
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body"):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _too_large(self) -> TooLarge:
        return TooLarge(f"request body is larger than max_request_size={self.max_request_size} bytes")


def _with_keep_alive(send: Send) -> Send:
    """HTTP/1.0 clients reuse a connection only if the response says keep-alive."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message["headers"], (b"connection", b"keep-alive")]}
        await send(message)

    return wrapped
