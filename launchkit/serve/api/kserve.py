"""KServe v2 (Open Inference Protocol) routes of the inference API.

``GET /v2``, ``GET /v2/health/live|ready``, ``GET /v2/models/{model}[/versions/{v}][/ready]``,
``POST /v2/models/{model}[/versions/{v}]/infer``, and Triton's extensions that its clients use:
binary tensor data, ``GET /v2/models/{model}[/versions/{v}]/config`` (model configuration) and
``GET /v2/models[/{model}[/versions/{v}]]/stats`` (statistics). Errors are ``{"error": message}``.
An infer request's rows are queued together as separate items, so they go through the same
dynamic batching and handler as ``/predictions`` (the tensors ↔ items codec is :mod:`.kserve_codec`).

Tensor metadata (``inputs``/``outputs`` of ``GET /v2/models/{model}`` and of ``/config``) comes
from the archive's model-config.yaml when it declares them; otherwise it is learned from the first
successful infer request (until then both lists are empty).
"""

from __future__ import annotations

import json
import time
from typing import Any

from launchkit.core.errors import BadRequest, LaunchkitError
from launchkit.serve.api.asgi import BodyReader, Receive, Scope, Send
from launchkit.serve.api.kserve_codec import V2Response, build_response, parse_infer
from launchkit.serve.api.responses import kserve_error, send_bytes, send_json
from launchkit.serve.api.rows import run_rows
from launchkit.serve.scheduling.registry import Registry, ServedModel
from launchkit.serve.tensors import DATATYPES, ModelTensors

EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics"]
LEARNED = "learned from the first successful request"



class KServeRoutes:
    def __init__(self, registry: Registry, read_body: BodyReader, max_elements: int = 16 * 2**20,
                 max_response_size: int = 6_553_500) -> None:
        self.registry = registry
        self.read_body = read_body
        self.max_elements = max_elements
        self.max_response_size = max_response_size

    async def server_route(self, operation: str, send: Send, request_id: str) -> None:
        """The routes about the server: live, ready, its metadata, every model's statistics."""
        if operation == "live":
            await send_json(send, 200, b'{"live": true}', request_id)
        elif operation == "ready":
            ready = self.registry.all_ready()
            await send_json(send, 200 if ready else 503, json.dumps({"ready": ready}).encode(), request_id)
        elif operation == "server_metadata":
            from launchkit import __version__

            await send_json(send, 200, {"name": "launchkit", "version": __version__, "extensions": EXTENSIONS},
                            request_id)
        else:
            await send_json(send, 200, {"model_stats": [model_statistics(m) for m in self.registry.all()]},
                            request_id)

    async def model_route(self, operation: str, model: ServedModel, scope: Scope, receive: Receive, send: Send,
                          request_id: str) -> None:
        """Metadata, readiness, infer, configuration and statistics of one model version."""
        if operation == "model_ready":
            await send_json(send, 200 if model.ready else 503, {"name": model.name, "ready": model.ready}, request_id)
        elif operation == "infer":
            await self._infer(model, scope, receive, send, request_id)
        elif operation == "model_config":
            await send_json(send, 200, model_configuration(model), request_id)
        elif operation == "model_statistics":
            await send_json(send, 200, {"model_stats": [model_statistics(model)]}, request_id)
        else:
            await send_json(send, 200, self.metadata(model), request_id)

    def metadata(self, model: ServedModel) -> dict[str, Any]:
        """KServe v2 model metadata, plus the settings as applied (``launchkit`` key)."""
        settings = model.settings
        tensors = model.tensors
        return {
            "name": model.name, "versions": sorted(self.registry.models[model.name]), "platform": "launchkit",
            "inputs": [spec.to_dict() for spec in tensors.inputs] if tensors else [],
            "outputs": [spec.to_dict() for spec in tensors.outputs] if tensors else [],
            "launchkit": {
                "tensors_from": tensors.source if tensors else None,
                "version": model.version, "batch_size": settings.batch_size,
                "max_batch_delay_ms": settings.max_batch_delay_ms, "job_queue_size": settings.job_queue_size,
                "response_timeout_s": settings.response_timeout_s, "ready": model.ready,
                "workers": [{"id": w.worker_id, "pid": w.pid, "state": w.state.value, "cpus": list(w.launch.cpus),
                             "threads": w.launch.threads, "env": {k: v for k, v in w.launch.env.items()
                                                                 if not k.startswith("LAUNCHKIT_")},
                             **w.info} for w in model.workers],
            },
        }

    async def _infer(self, model: ServedModel, scope: Scope, receive: Receive, send: Send,
                     request_id: str) -> None:
        started = time.perf_counter()
        try:
            declared, header_length = b"", None
            for name, value in scope["headers"]:
                if name == b"content-length":
                    declared = value
                elif name == b"inference-header-content-length":
                    header_length = _header_length(value)
            body = await self.read_body(declared, receive)
        except LaunchkitError as error:
            response = V2Response(*kserve_error(error))
            if model.metrics is not None:
                model.metrics.request_done(response.status, time.perf_counter() - started)
        else:
            response = await self.answer_infer(model, body, header_length, request_id, started)
        if response.headers and response.status == 200:  # binary outputs
            await send_bytes(send, 200, response.body, "application/octet-stream", request_id, response.headers)
        else:
            await send_json(send, response.status, response.body, request_id, response.headers)

    async def answer_infer(self, model: ServedModel, body: bytes, header_length: int | None, request_id: str,
                           started: float) -> V2Response:
        """Split the tensors into rows, queue each row as an item (so rows batch), join the outputs.

        The HTTP route and the gRPC service (which writes its messages in the binary form) both answer here."""
        try:
            request = parse_infer(body, header_length, self.max_elements, model.tensors)
            results = await run_rows(model, request.rows, request_id)
            response = build_response(model.name, model.version, request, results, model.tensors)
            if len(response.body) > self.max_response_size:
                response = V2Response(500, json.dumps({
                    "error": f"the model's response ({len(response.body)} bytes) is larger than "
                             f"max_response_size={self.max_response_size}"}).encode())
            elif response.status == 200 and model.tensors is None:
                model.tensors = ModelTensors(request.inputs, response.outputs, LEARNED)
        except LaunchkitError as error:
            response = V2Response(*kserve_error(error))
        if model.metrics is not None:
            model.metrics.request_done(response.status, time.perf_counter() - started)
        return response


def _header_length(value: bytes) -> int:
    if not value.strip().isdigit():
        raise BadRequest(f"Inference-Header-Content-Length must be a byte count, got {value[:40]!r}")
    return int(value)


def model_configuration(model: ServedModel) -> dict[str, Any]:
    """Triton's model configuration (the fields its clients read), from the model's settings and tensors.

    Every input has a batch dimension here (rows are batched across requests), so ``max_batch_size``
    is at least 1 and ``dims`` leave it out, as in Triton."""
    settings = model.settings
    tensors = model.tensors

    def entries(specs: Any) -> list[dict[str, Any]]:
        return [{"name": spec.name, "data_type": DATATYPES[spec.datatype].triton, "dims": list(spec.shape[1:])}
                for spec in specs]

    config: dict[str, Any] = {
        "name": model.name, "platform": "launchkit", "backend": "launchkit",
        "version_policy": {"specific": {"versions": [model.version]}},
        "max_batch_size": max(1, settings.batch_size),
        "input": entries(tensors.inputs) if tensors else [],
        "output": entries(tensors.outputs) if tensors else [],
        "instance_group": [{"name": model.name, "kind": "KIND_CPU", "count": settings.workers}],
        "parameters": {"tensors_from": {"string_value": tensors.source if tensors else "not known yet"}},
    }
    if settings.batch_size > 1:
        config["dynamic_batching"] = {"preferred_batch_size": [settings.batch_size],
                                      "max_queue_delay_microseconds": int(settings.max_batch_delay_ms * 1000)}
    return config


def model_statistics(model: ServedModel) -> dict[str, Any]:
    """Triton's statistics extension for one model version: counts and cumulative nanoseconds.
    Compute times are per request (a batch's time counts once for each request in it), as in Triton.
    All zero when the server keeps no metrics (enable_metrics_api=false)."""
    totals = model.metrics.totals if model.metrics is not None else None
    # Triton's versions are integers and perf_analyzer matches statistics by the integer it parses
    # from them: TorchServe's usual "1.0" is reported as "1" here (other versions as they are).
    version = model.version[:-2] if model.version.endswith(".0") and model.version[:-2].isdigit() else model.version

    def duration(count: int, seconds: float) -> dict[str, int]:
        return {"count": count, "ns": int(seconds * 1e9)}

    if totals is None:
        zero = duration(0, 0.0)
        stats = {key: zero for key in ("success", "fail", "queue", "compute_input", "compute_infer",
                                       "compute_output", "cache_hit", "cache_miss")}
        return {"name": model.name, "version": version, "last_inference": 0, "inference_count": 0,
                "execution_count": 0, "inference_stats": stats, "batch_stats": []}
    stage = totals.stage_seconds
    has_stages = "inference" in stage
    infer = stage.get("inference", stage.get("handle", 0.0))
    return {
        "name": model.name, "version": version, "last_inference": int(totals.last_at * 1000),
        "inference_count": totals.rows, "execution_count": totals.batches,
        "inference_stats": {
            "success": duration(totals.ok, totals.ok_seconds),
            "fail": duration(totals.failed, totals.failed_seconds),
            "queue": duration(totals.queued, totals.queue_seconds),
            "compute_input": duration(totals.rows, stage.get("preprocess", 0.0) if has_stages else 0.0),
            "compute_infer": duration(totals.rows, infer),
            "compute_output": duration(totals.rows, stage.get("postprocess", 0.0) if has_stages else 0.0),
            "cache_hit": duration(0, 0.0), "cache_miss": duration(0, 0.0),
        },
        # the handler's stages are not known per batch size: the whole call counts as compute_infer
        "batch_stats": [{"batch_size": size, "compute_input": duration(count, 0.0),
                         "compute_infer": duration(count, seconds), "compute_output": duration(count, 0.0)}
                        for size, (count, seconds) in sorted(totals.batch_sizes.items())],
    }

