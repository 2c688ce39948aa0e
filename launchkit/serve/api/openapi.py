"""OpenAPI 3 documents of the three ports, written from the route tables the apps dispatch on
(:mod:`launchkit.serve.api.routes`), so a route cannot exist without its description or the reverse.

Served as TorchServe serves its own: ``OPTIONS /`` and ``GET /api-description`` on each port. The
body schemas below are what the handlers answer; the suite validates the documents with an OpenAPI
validator and checks live responses against them with schemathesis.
"""

from __future__ import annotations

import functools
from typing import Any

from launchkit.serve.api.routes import INFERENCE_ROUTES, MANAGEMENT_ROUTES, METRICS_ROUTES, Route

OPENAPI_VERSION = "3.0.1"  # what TorchServe's documents declare

_STRING = {"type": "string"}
_STRINGS = {"type": "array", "items": _STRING}
_SHAPE = {"type": "array", "items": {"type": "integer"}}
_ANY_OBJECT = {"type": "object", "additionalProperties": True}


def _object(required: tuple[str, ...], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": properties}


_TENSOR_METADATA = _object(("name", "datatype", "shape"), name=_STRING, datatype=_STRING, shape=_SHAPE)
_V2_DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
                 "FP32", "FP64", "BF16", "BYTES"]

SCHEMAS: dict[str, dict[str, Any]] = {
    "TorchServeError": _object(("code", "type", "message"), code={"type": "integer"}, type=_STRING,
                               message=_STRING),
    "KServeError": _object(("error",), error=_STRING),
    "Ping": _object(("status",), status={"type": "string", "enum": ["Healthy", "Unhealthy"]},
                    failedModels={"type": "object", "additionalProperties": _STRING}),
    "Status": _object(("status",), status=_STRING),
    "OpenAPI": _object(("openapi", "info", "paths"), openapi=_STRING, info=_ANY_OBJECT, paths=_ANY_OBJECT),
    "V2Live": _object(("live",), live={"type": "boolean"}),
    "V2Ready": _object(("ready",), ready={"type": "boolean"}),
    "V2ModelReady": _object(("name", "ready"), name=_STRING, ready={"type": "boolean"}),
    "V2ServerMetadata": _object(("name", "version", "extensions"), name=_STRING, version=_STRING,
                                extensions=_STRINGS),
    "V2Statistics": _object(("model_stats",), model_stats={"type": "array", "items": _object(
        ("name", "version", "inference_count", "execution_count", "inference_stats"), name=_STRING, version=_STRING,
        inference_count={"type": "integer"}, execution_count={"type": "integer"}, inference_stats=_ANY_OBJECT)}),
    "V2ModelMetadata": _object(("name", "versions", "platform", "inputs", "outputs"), name=_STRING,
                               versions=_STRINGS, platform=_STRING,
                               inputs={"type": "array", "items": _TENSOR_METADATA},
                               outputs={"type": "array", "items": _TENSOR_METADATA}),
    "V2ModelConfig": _object(("name",), name=_STRING, max_batch_size={"type": "integer"},
                             input={"type": "array", "items": _ANY_OBJECT},
                             output={"type": "array", "items": _ANY_OBJECT}),
    "V2InferRequest": _object(
        ("inputs",), id=_STRING, parameters=_ANY_OBJECT,
        inputs={"type": "array", "minItems": 1, "items": _object(
            ("name", "shape", "datatype"), name={"type": "string", "minLength": 1}, shape=_SHAPE,
            datatype={"type": "string", "enum": _V2_DATATYPES}, parameters=_ANY_OBJECT,
            data={"description": "the tensor's elements, flat or nested in row-major order"})},
        outputs={"type": "array", "items": _object(("name",), name=_STRING, parameters=_ANY_OBJECT)}),
    "V2InferResponse": _object(
        ("model_name", "outputs"), model_name=_STRING, model_version=_STRING, id=_STRING, parameters=_ANY_OBJECT,
        outputs={"type": "array", "items": _object(("name", "shape", "datatype"), name=_STRING, shape=_SHAPE,
                                                   datatype=_STRING, parameters=_ANY_OBJECT,
                                                   data={"type": "array", "items": {}})}),
    "V1PredictRequest": {"type": "object", "description": 'row form {"instances": [...]} or columnar form '
                                                          '{"inputs": [...] | {name: [...]}}, not both',
                         "properties": {"instances": {"type": "array", "items": {}, "minItems": 1, "maxItems": 4096},
                                        "inputs": {}}},
    "V1Predictions": _object(("predictions",), predictions={"type": "array", "items": {}}),
    "V1Status": _object(("name", "ready", "model_version_status"), name=_STRING, ready={"type": "boolean"},
                        model_version_status={"type": "array", "items": _object(
                            ("version", "state", "status"), version=_STRING, state=_STRING, status=_ANY_OBJECT)}),
    "ModelList": _object(("models",), nextPageToken=_STRING, models={"type": "array", "items": _object(
        ("modelName", "modelUrl"), modelName=_STRING, modelUrl=_STRING)}),
    "ModelDescriptions": {"type": "array", "items": _object(
        ("modelName", "modelVersion", "modelUrl", "minWorkers", "maxWorkers", "batchSize", "workers"),
        modelName=_STRING, modelVersion=_STRING, modelUrl=_STRING, minWorkers={"type": "integer"},
        maxWorkers={"type": "integer"}, batchSize={"type": "integer"},
        workers={"type": "array", "items": _object(("id", "status"), id=_STRING, status=_STRING)})},
}

_BODIES: dict[str, dict[str, Any]] = {
    "*": {"content": {"application/json": {"schema": {}},
                      "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                      "text/plain": {"schema": _STRING}},
          "description": "what the model's handler takes: JSON, an image, text, anything"},
    "V2InferRequest": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/V2InferRequest"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "description": "JSON, or Triton's binary extension: a JSON header of Inference-Header-Content-Length "
                       "bytes, then the raw tensors"},
    "V1PredictRequest": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/V1PredictRequest"}}}},
}

_TITLES = {"inference": ("launchkit inference API", INFERENCE_ROUTES),
           "management": ("launchkit management API", MANAGEMENT_ROUTES),
           "metrics": ("launchkit metrics API", METRICS_ROUTES)}


def _parameters(route: Route) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
         "description": "the model's name" if name == "model_name" else "a version of the model"}
        for name in route.path_params]
    for param in route.query:
        schema: dict[str, Any] = {"type": param.kind}
        if param.minimum is not None:
            schema["minimum"] = param.minimum
        if param.kind == "string" and param.required:
            schema["minLength"] = 1  # an empty required value is refused like a missing one
        if param.array:
            schema = {"type": "array", "items": schema}
        parameter = {"name": param.name, "in": "query", "required": param.required, "schema": schema,
                     "description": param.description}
        if not param.required:
            parameter["allowEmptyValue"] = True  # "limit=" is as if not given (found by schemathesis)
        parameters.append(parameter)
    return parameters


def _operation(route: Route) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for answer in route.answers:
        if str(answer.status) in responses:
            continue  # the first description of a status is the route's own
        content = {media: ({"schema": {"$ref": f"#/components/schemas/{answer.schema}"}} if answer.schema else {})
                   for media in answer.media}
        responses[str(answer.status)] = {"description": answer.description, "content": content}
    operation: dict[str, Any] = {"operationId": route.operation_id, "summary": route.summary, "tags": [route.tag],
                                 "responses": responses}
    parameters = _parameters(route)
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = _BODIES[route.body]
    if not route.token:
        operation["security"] = []  # never needs the token, even with one set
    return operation


@functools.cache
def document(api: str) -> dict[str, Any]:
    """The OpenAPI document of one port: ``inference``, ``management`` or ``metrics``."""
    from launchkit import __version__

    title, routes = _TITLES[api]
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.template, {})[route.method.lower()] = _operation(route)
    used = {answer.schema for route in routes for answer in route.answers if answer.schema}
    used |= {route.body for route in routes if route.body in SCHEMAS}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": __version__,
                 "description": "TorchServe-compatible; errors are TorchServe's {code, type, message}, or "
                                "KServe's {error} under /v1 and /v2"},
        "paths": paths,
        "components": {
            "schemas": {name: SCHEMAS[name] for name in sorted(used)},
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer",
                                          "description": "needed only when the server has a token set"}},
        },
        "security": [{"token": []}, {}],
    }
