"""KServe v2 (Open Inference Protocol) routes of the inference API.

``GET /v2``, ``GET /v2/health/live|ready``, ``GET /v2/models/{model}[/versions/{v}][/ready]``,
``POST /v2/models/{model}[/versions/{v}]/infer``; errors are ``{"error": message}``. An infer
request's rows are queued together as separate items, so they go through the same dynamic
batching and handler as ``/predictions`` (the tensors ↔ items codec is :mod:`.kserve_codec`).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Awaitable, Callable

from launchkit.core.errors import LaunchkitError, MethodNotAllowed, NotFound
from launchkit.serve.api.kserve_codec import build_response, parse_infer
from launchkit.serve.api.responses import kserve_error, send_json
from launchkit.serve.scheduling.registry import Registry, ServedModel
from launchkit.serve.wire import ItemRequest, ItemResult

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
BodyReader = Callable[[bytes, Receive], Awaitable[bytes]]


class KServeRoutes:
    def __init__(self, registry: Registry, read_body: BodyReader, max_elements: int = 16 * 2**20,
                 max_response_size: int = 6_553_500) -> None:
        self.registry = registry
        self.read_body = read_body
        self.max_elements = max_elements
        self.max_response_size = max_response_size

    async def health(self, send: Send, path: str, request_id: str) -> None:
        if path == "/v2/health/live":
            await send_json(send, 200, b'{"live": true}', request_id)
        elif path == "/v2/health/ready":
            ready = self.registry.all_ready()
            await send_json(send, 200 if ready else 503, json.dumps({"ready": ready}).encode(), request_id)
        else:
            raise NotFound(f"no such endpoint: GET {path}")

    async def handle(self, scope: dict[str, Any], receive: Receive, send: Send, path: str, method: str,
                     request_id: str) -> None:
        if path.rstrip("/") == "/v2" and method == "GET":
            from launchkit import __version__

            await send_json(send, 200, {"name": "launchkit", "version": __version__, "extensions": []}, request_id)
        elif path.startswith("/v2/models/"):
            try:
                await self._model_route(scope, receive, send, path, method, request_id)
            except LaunchkitError as error:
                status, body, headers = kserve_error(error)
                await send_json(send, status, body, request_id, headers)
        else:
            raise NotFound(f"no such endpoint: {method} {path}")

    async def _model_route(self, scope: dict[str, Any], receive: Receive, send: Send, path: str, method: str,
                           request_id: str) -> None:
        """Metadata, readiness and infer, by model and optional version."""
        parts = [part for part in path[len("/v2/models/"):].split("/") if part]
        action = parts.pop() if parts and parts[-1] in ("ready", "infer") and len(parts) in (2, 4) else None
        version = None
        if len(parts) == 3 and parts[1] == "versions":
            version = parts[2]
        elif len(parts) != 1:
            raise NotFound(f"no such endpoint: {method} {path}")
        model = self.registry.find(parts[0], version)
        expected = "POST" if action == "infer" else "GET"
        if method != expected:
            raise MethodNotAllowed(f"use {expected} for {path}", expected)
        if action == "ready":
            await send_json(send, 200 if model.ready else 503, {"name": model.name, "ready": model.ready}, request_id)
        elif action == "infer":
            await self._infer(model, scope, receive, send, request_id)
        else:
            await send_json(send, 200, self._metadata(model), request_id)

    def _metadata(self, model: ServedModel) -> dict[str, Any]:
        """KServe v2 model metadata, plus the settings as applied (``launchkit`` key)."""
        settings = model.settings
        return {
            "name": model.name, "versions": sorted(self.registry.models[model.name]), "platform": "launchkit",
            "inputs": [], "outputs": [],
            "launchkit": {
                "version": model.version, "batch_size": settings.batch_size,
                "max_batch_delay_ms": settings.max_batch_delay_ms, "job_queue_size": settings.job_queue_size,
                "response_timeout_s": settings.response_timeout_s, "ready": model.ready,
                "workers": [{"id": w.worker_id, "pid": w.pid, "state": w.state.value, "cpus": list(w.launch.cpus),
                             "threads": w.launch.threads, "env": {k: v for k, v in w.launch.env.items()
                                                                 if not k.startswith("LAUNCHKIT_")},
                             **w.info} for w in model.workers],
            },
        }

    async def _infer(self, model: ServedModel, scope: dict[str, Any], receive: Receive, send: Send,
                     request_id: str) -> None:
        """Split the tensors into rows, queue each row as an item (so rows batch), join the outputs."""
        started = time.perf_counter()
        futures: list[asyncio.Future[ItemResult]] = []
        headers: tuple[tuple[bytes, bytes], ...] = ()
        try:
            declared = next((value for name, value in scope["headers"] if name == b"content-length"), b"")
            request = parse_infer(await self.read_body(declared, receive), self.max_elements)
            items = [ItemRequest(f"{request_id}.{index}", body, content_type, [])
                     for index, (body, content_type) in enumerate(request.rows)]
            futures = model.queue.submit_many(items)
            results = await asyncio.gather(*futures)
            status, payload = build_response(model.name, model.version, request.request_id, request.output_name,
                                             list(results))
            if len(payload) > self.max_response_size:
                status, payload = 500, json.dumps({"error": f"the model's response ({len(payload)} bytes) is larger "
                                                            f"than max_response_size={self.max_response_size}"}).encode()
        except LaunchkitError as error:
            status, payload, headers = kserve_error(error)
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        if status >= 400:
            for future in futures:
                future.cancel()  # rows still queued are not run
        await send_json(send, status, payload, request_id, headers)
        if model.metrics is not None:
            model.metrics.request_done(status, time.perf_counter() - started)

