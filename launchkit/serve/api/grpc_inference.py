"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` on grpc.aio's server.

Serves ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer and
ModelStreamInfer, and Triton's ModelConfig and ModelStatistics (which tritonclient and perf_analyzer
call on start-up), on ``grpc_inference_address`` (``--grpc-address``; off unless set; Triton's usual
port is 8001). It runs on the server's own event loop and answers through the same code as the HTTP
v2 routes (:meth:`launchkit.serve.api.kserve.KServeRoutes.answer_infer`): rows of gRPC and HTTP requests
are batched together, and a bad request is refused with the same message, as a gRPC status
(INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, UNAVAILABLE, …) instead of an HTTP one. Messages
larger than ``max_request_size`` are refused by gRPC itself (RESOURCE_EXHAUSTED). With an inference
token set, every call but ServerLive and ServerReady needs ``authorization: Bearer <token>`` metadata.
The other methods of Triton's service (repository, shared memory, trace, log settings) answer
UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import json_format

from launchkit.core.errors import LaunchkitError
from launchkit.serve.api.grpc_codec import error_message, infer_body, numeric_versions, split_response
from launchkit.serve.api.grpc_server import Malformed, Service, Shape, abort_with, code_for, method_handler
from launchkit.serve.api.kserve import EXTENSIONS, KServeRoutes, model_configuration, model_statistics
from launchkit.serve.api.kserve_codec import V2Response
from launchkit.serve.api.protos import open_inference_pb2 as pb
from launchkit.serve.api.responses import kserve_error
from launchkit.serve.scheduling.registry import Registry, ServedModel

SERVICE = "inference.GRPCInferenceService"
UNGUARDED = frozenset({"ServerLive", "ServerReady"})  # health answers need no token, as over HTTP
UNARY = {"ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
         "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
         "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
         "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
         "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
         "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
         "ModelConfig": (pb.ModelConfigRequest, pb.ModelConfigResponse),
         "ModelStatistics": (pb.ModelStatisticsRequest, pb.ModelStatisticsResponse)}


class GrpcInferenceService:
    def __init__(self, registry: Registry, kserve: KServeRoutes, token: str | None = None) -> None:
        self.registry = registry
        self.kserve = kserve
        self.token = token
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}-g"

    # -- the service's methods -----------------------------------------------------------------

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802 - the protocol's names
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=self.registry.all_ready())

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        from launchkit import __version__

        return pb.ServerMetadataResponse(name="launchkit", version=__version__, extensions=EXTENSIONS)

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return pb.ModelReadyResponse(ready=(await self._model(request.name, request.version, context)).ready)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        model = await self._model(request.name, request.version, context)
        metadata = self.kserve.metadata(model)
        metadata.pop("launchkit")  # launchkit's own key of the HTTP answer: the message has no field for it
        return json_format.ParseDict(metadata, pb.ModelMetadataResponse())

    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        model = await self._model(request.name, request.version, context)
        config = model_configuration(model)
        config["version_policy"] = {"specific": {"versions": numeric_versions(model.version)}}
        return pb.ModelConfigResponse(config=json_format.ParseDict(config, pb.ModelConfig()))

    async def ModelStatistics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        if request.name:
            models = [await self._model(request.name, request.version, context)]
        else:
            models = self.registry.all()
        stats = [model_statistics(model) for model in models]
        return json_format.ParseDict({"model_stats": stats}, pb.ModelStatisticsResponse())

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        model = await self._model(request.model_name, request.model_version, context)
        response = await self._infer(model, request)
        if response.status != 200:
            await context.abort(code_for(response.status), error_message(response))
        return _infer_response(model, request, response)

    async def ModelStreamInfer(self, requests: AsyncIterator[Any],  # noqa: N802
                               context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        """Each request of the stream runs as soon as it arrives; answers come as they are ready (their
        ``id`` says which request they answer), an error as ``error_message`` without ending the stream."""
        answers: asyncio.Queue[Any] = asyncio.Queue()
        running: set[asyncio.Task[None]] = set()

        async def answer(request: Any) -> None:
            if isinstance(request, Malformed):
                await answers.put(pb.ModelStreamInferResponse(error_message=request.message))
                return
            try:
                model = self.registry.find(request.model_name, request.model_version or None)
                response = await self._infer(model, request)
            except LaunchkitError as error:
                await answers.put(pb.ModelStreamInferResponse(error_message=str(error)))
                return
            if response.status != 200:
                await answers.put(pb.ModelStreamInferResponse(error_message=error_message(response)))
            else:
                await answers.put(pb.ModelStreamInferResponse(infer_response=_infer_response(model, request, response)))

        async def read() -> None:
            try:
                async for request in requests:
                    task = asyncio.ensure_future(answer(request))
                    running.add(task)
                    task.add_done_callback(running.discard)
                while running:
                    await asyncio.wait(set(running))
            finally:  # the client's half ended, or reading it failed: the answers end too
                answers.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            while (item := await answers.get()) is not None:
                yield item
        finally:
            reader.cancel()
            for task in list(running):
                task.cancel()

    # -- helpers -------------------------------------------------------------------------------

    async def _model(self, name: str, version: str, context: grpc.aio.ServicerContext) -> ServedModel:
        try:
            return self.registry.find(name, version or None)
        except LaunchkitError as error:
            await abort_with(context, error)
            raise  # abort raises; this line is for the type checker

    async def _infer(self, model: ServedModel, request: Any) -> V2Response:
        started = time.perf_counter()
        request_id = self._id_prefix + str(next(self._ids))
        try:
            body, header_length = infer_body(request)
        except LaunchkitError as error:
            return V2Response(*kserve_error(error))
        return await self.kserve.answer_infer(model, body, header_length, request_id, started)

    def service(self) -> Service:
        """The service as grpc.aio registers it: each method with its messages' (de)serializers."""
        handlers = {name: method_handler(getattr(self, name), Shape.UNARY, request, response,
                                         None if name in UNGUARDED else self.token)
                    for name, (request, response) in UNARY.items()}
        handlers["ModelStreamInfer"] = method_handler(self.ModelStreamInfer, Shape.STREAM_STREAM, pb.ModelInferRequest,
                                                      pb.ModelStreamInferResponse, self.token)
        return SERVICE, handlers


def _infer_response(model: ServedModel, request: Any, response: V2Response) -> Any:
    header, raws = split_response(response)
    outputs = [pb.ModelInferResponse.InferOutputTensor(name=output["name"], datatype=output["datatype"],
                                                       shape=output["shape"]) for output in header["outputs"]]
    return pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id,
                                 outputs=outputs, raw_output_contents=raws)
