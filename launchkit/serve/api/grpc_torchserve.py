"""TorchServe's gRPC APIs, from its own ``inference.proto`` and ``management.proto``.

* ``org.pytorch.serve.grpc.inference.InferenceAPIsService`` (served beside the Open Inference
  Protocol on the gRPC inference address): Ping; Predictions, whose ``input`` map reaches the
  handler as TorchServe hands it over, one field per entry (``data[0]["data"]`` for
  ``input={"data": ...}``), through the same queue and batching as ``/predictions``;
  StreamPredictions (launchkit's handlers answer once, so the stream carries that one answer);
  StreamPredictions2 (each request of the stream answered in turn, errors in the answer's
  ``status`` without ending the stream, ``sequence_id`` echoed).
* ``org.pytorch.serve.grpc.management.ManagementAPIsService`` (on the gRPC management address):
  DescribeModel, ListModels, RegisterModel, ScaleWorker, SetDefault, UnregisterModel, answered by
  the HTTP management API's own code (same checks, same messages; the answer's ``msg`` is the JSON
  TorchServe would put there, or the status sentence for operations that answer one).

Errors are gRPC statuses named after the HTTP status TorchServe would give (NOT_FOUND for an
unknown model, INVALID_ARGUMENT for a bad request, UNAVAILABLE with no worker, …).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import grpc

from launchkit.core.errors import LaunchkitError
from launchkit.serve.api.grpc_server import Malformed, Service, Shape, abort_with, code_for, method_handler
from launchkit.serve.api.protos import torchserve_inference_pb2 as inference_pb
from launchkit.serve.api.protos import torchserve_management_pb2 as management_pb
from launchkit.serve.api.responses import http_error
from launchkit.serve.scheduling.registry import Registry
from launchkit.serve.wire import ItemRequest, ItemResult

INFERENCE_SERVICE = "org.pytorch.serve.grpc.inference.InferenceAPIsService"
MANAGEMENT_SERVICE = "org.pytorch.serve.grpc.management.ManagementAPIsService"


class PredictionFailed(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class TorchServeInference:
    def __init__(self, registry: Registry, max_response_size: int, token: str | None = None) -> None:
        self.registry = registry
        self.max_response_size = max_response_size
        self.token = token
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}-t"

    async def Ping(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802 - TorchServe's names
        failures = self.registry.failures()
        health = {"status": "Healthy"} if not failures else {"status": "Unhealthy", "failedModels": failures}
        return inference_pb.TorchServeHealthResponse(health=json.dumps(health, indent=2))

    async def Predictions(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        try:
            return inference_pb.PredictionResponse(prediction=await self._predict(request))
        except LaunchkitError as error:
            await abort_with(context, error)
        except PredictionFailed as failure:
            await context.abort(code_for(failure.status), str(failure))

    async def StreamPredictions(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:  # noqa: N802
        yield await self.Predictions(request, context)

    async def StreamPredictions2(self, requests: AsyncIterator[Any],  # noqa: N802
                                 context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, Malformed):
                yield inference_pb.PredictionResponse(status=inference_pb.RpcStatus(
                    code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=request.message))
                continue
            sequence = {"sequence_id": request.sequence_id} if request.HasField("sequence_id") else {}
            try:
                yield inference_pb.PredictionResponse(prediction=await self._predict(request), **sequence)
            except (LaunchkitError, PredictionFailed) as error:
                status = error.status if isinstance(error, PredictionFailed) else http_error(error)[0]
                yield inference_pb.PredictionResponse(status=inference_pb.RpcStatus(
                    code=code_for(status).value[0], message=str(error)), **sequence)

    async def _predict(self, request: Any) -> bytes:
        started = time.perf_counter()
        model = self.registry.find(request.model_name, request.model_version or None)
        body, content_type = form_body(dict(request.input))
        future = model.queue.submit(ItemRequest(self._id_prefix + str(next(self._ids)), body, content_type, []))
        try:
            result: ItemResult = await future
        except asyncio.CancelledError:
            future.cancel()  # the client went away: the batcher skips it if it is still queued
            raise
        if model.metrics is not None:
            model.metrics.request_done(result.status, time.perf_counter() - started)
        if result.status != 200:
            raise PredictionFailed(result.status, _message(result.body))
        if len(result.body) > self.max_response_size:
            raise PredictionFailed(500, f"the model's response ({len(result.body)} bytes) is larger than "
                                        f"max_response_size={self.max_response_size}")
        return result.body

    def service(self) -> Service:
        request, response = inference_pb.PredictionsRequest, inference_pb.PredictionResponse
        from google.protobuf import empty_pb2

        return INFERENCE_SERVICE, {
            "Ping": method_handler(self.Ping, Shape.UNARY, empty_pb2.Empty, inference_pb.TorchServeHealthResponse,
                                   None),  # health needs no token, as /ping
            "Predictions": method_handler(self.Predictions, Shape.UNARY, request, response, self.token),
            "StreamPredictions": method_handler(self.StreamPredictions, Shape.UNARY_STREAM, request, response,
                                                self.token),
            "StreamPredictions2": method_handler(self.StreamPredictions2, Shape.STREAM_STREAM, request, response,
                                                 self.token),
        }


def form_body(fields: dict[str, bytes]) -> tuple[bytes, str]:
    """``fields`` as a multipart/form-data body: the workers hand its parts to the handler one field each,
    as TorchServe does with a Predictions request's ``input`` map."""
    boundary = "launchkit-grpc-" + os.urandom(12).hex()
    parts = []
    for name, value in fields.items():
        quoted = name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")  # as browsers write them
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{quoted}"\r\n\r\n'.encode())
        parts.append(value)
        parts.append(b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _message(body: bytes) -> str:
    try:
        answer = json.loads(body)
    except ValueError:
        return body.decode(errors="replace")
    return str(answer.get("message", answer)) if isinstance(answer, dict) else str(answer)


class TorchServeManagement:
    """Each call as the HTTP management API's request, answered by its own code (``ManagementApp.answer``)."""

    def __init__(self, management: Any, host: str) -> None:
        self.management = management
        self.host = host.encode()

    async def _call(self, context: grpc.aio.ServicerContext, method: str, path: str, query: dict[str, Any]) -> Any:
        headers = [(b"host", self.host)]
        headers += [(key.encode(), value.encode()) for key, value in context.invocation_metadata() or ()
                    if key == "authorization" and isinstance(value, str)]
        scope = {"type": "http", "method": method, "path": path, "headers": headers,
                 "query_string": urlencode({k: v for k, v in query.items() if v not in (None, "")}).encode()}
        try:
            _status, payload = await self.management.answer(scope)
        except LaunchkitError as error:
            await abort_with(context, error)
        if isinstance(payload, dict) and set(payload) == {"status"}:
            return management_pb.ManagementResponse(msg=str(payload["status"]))
        return management_pb.ManagementResponse(msg=json.dumps(payload, indent=2))

    async def DescribeModel(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return await self._call(context, "GET", _model_path(request.model_name, request.model_version),
                                {"customized": "true" if request.customized else None})

    async def ListModels(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return await self._call(context, "GET", "/models", {"limit": request.limit or None,
                                                             "next_page_token": request.next_page_token or None})

    async def RegisterModel(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        # proto3 has no "unset": TorchServe reads a 0 as "not given", and so does this
        return await self._call(context, "POST", "/models", {
            "url": request.url, "model_name": request.model_name, "handler": request.handler,
            "runtime": request.runtime, "batch_size": request.batch_size or None,
            "max_batch_delay": request.max_batch_delay or None, "initial_workers": request.initial_workers or None,
            "response_timeout": request.response_timeout or None, "startup_timeout": request.startup_timeout or None,
            "synchronous": "true" if request.synchronous else None})

    async def ScaleWorker(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return await self._call(context, "PUT", _model_path(request.model_name, request.model_version), {
            "min_worker": request.min_worker or None, "max_worker": request.max_worker or None,
            "synchronous": "true" if request.synchronous else None, "timeout": request.timeout or None})

    async def SetDefault(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return await self._call(context, "PUT", _model_path(request.model_name, request.model_version) + "/set-default",
                                {})

    async def UnregisterModel(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return await self._call(context, "DELETE", _model_path(request.model_name, request.model_version), {})

    def service(self) -> Service:
        methods = {"DescribeModel": management_pb.DescribeModelRequest, "ListModels": management_pb.ListModelsRequest,
                   "RegisterModel": management_pb.RegisterModelRequest, "ScaleWorker": management_pb.ScaleWorkerRequest,
                   "SetDefault": management_pb.SetDefaultRequest,
                   "UnregisterModel": management_pb.UnregisterModelRequest}
        # the token is checked by the management API itself (its message, its exceptions such as /ping)
        return MANAGEMENT_SERVICE, {
            name: method_handler(getattr(self, name), Shape.UNARY, request, management_pb.ManagementResponse, None)
            for name, request in methods.items()}


def _model_path(name: str, version: str) -> str:
    return f"/models/{quote(name, safe='')}" + (f"/{quote(version, safe='')}" if version else "")
