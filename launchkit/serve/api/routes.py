"""Every HTTP route of the three ports, declared once: the apps dispatch on these tables and the
OpenAPI documents (:mod:`launchkit.serve.api.openapi`) are written from them, so the two cannot drift.

A route is a method, an OpenAPI path template (``/predictions/{model_name}``), the operation that
answers it, its query parameters and what it answers. :class:`Router` matches a request against a
table: the route and its path parameters, or the error a client should get (404 no such endpoint,
405 with the methods that are allowed). Pure: no I/O.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from launchkit.core.errors import MethodNotAllowed, NotFound


class ErrorShape(enum.Enum):
    """The body an error gets on a route: TorchServe's ``{"code", "type", "message"}`` or KServe's
    ``{"error": message}``."""

    TORCHSERVE = "torchserve"
    KSERVE = "kserve"


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    kind: str = "string"  # a JSON schema type: string, integer, number, boolean
    minimum: float | None = None
    required: bool = False
    array: bool = False  # the parameter may repeat (name[]=a&name[]=b)


@dataclass(frozen=True)
class Answer:
    """One documented response: its status, what it means, and the schema of its body (a name in
    :data:`launchkit.serve.api.openapi.SCHEMAS`; None: any content)."""

    status: int
    description: str
    schema: str | None = None
    media: tuple[str, ...] = ("application/json",)


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    operation: str  # the app's handler and the OpenAPI operationId (made unique per method and path)
    summary: str
    tag: str
    answers: tuple[Answer, ...]
    query: tuple[Param, ...] = ()
    body: str | None = None  # the request body's schema name; "*" any content; None: no body
    token: bool = True  # needs the API's bearer token when one is set
    errors: ErrorShape = ErrorShape.TORCHSERVE
    path_params: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "path_params", tuple(re.findall(r"\{(\w+)\}", self.template)))

    @property
    def operation_id(self) -> str:
        versioned = "_version" if "{model_version}" in self.template else ""
        return f"{self.operation}{versioned}_{self.method.lower()}"

    def query_names(self) -> frozenset[str]:
        return frozenset(param.name for param in self.query)


def _pattern(template: str) -> re.Pattern[str]:
    """A template's regex: each ``{name}`` is one path segment; under /v1 a segment also stops at ':'
    (``/v1/models/NAME:predict``), so NAME cannot hold one."""
    stop = "/:" if template.startswith("/v1/") else "/"
    parts = re.split(r"(\{\w+\})", template)
    return re.compile("".join(f"(?P<{part[1:-1]}>[^{stop}]+)" if part.startswith("{") else re.escape(part)
                              for part in parts) + r"\Z")


class Router:
    """Matches (method, path) against a route table; routes listed first win (static before templated)."""

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self.routes = routes
        self._static: dict[str, dict[str, Route]] = {}
        self._templated: list[tuple[re.Pattern[str], dict[str, Route]]] = []
        by_template: dict[str, dict[str, Route]] = {}
        for route in routes:
            methods = by_template.setdefault(route.template, {})
            if route.method in methods:
                raise ValueError(f"{route.method} {route.template} is declared twice")
            methods[route.method] = route
        for template, methods in by_template.items():
            if "{" in template:
                self._templated.append((_pattern(template), methods))
            else:
                self._static[template] = methods

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route for a request and its path parameters. Empty segments are ignored
        (``/v2/models//tiny/`` is ``/v2/models/tiny``). Raises NotFound or MethodNotAllowed."""
        if "//" in path or (path.endswith("/") and len(path) > 1):
            path = "/" + "/".join(part for part in path.split("/") if part)
        methods = self._static.get(path)
        params: dict[str, str] = {}
        if methods is None:
            for pattern, candidates in self._templated:
                found = pattern.match(path)
                if found is not None:
                    methods, params = candidates, found.groupdict()
                    break
            else:
                raise NotFound(f"no such endpoint: {method} {path}")
        route = methods.get(method)
        if route is None:
            allowed = ", ".join(methods)
            raise MethodNotAllowed(f"{method} is not allowed on {path}; use {allowed}", allowed)
        return route, params

    def error_shape(self, path: str) -> ErrorShape:
        """The error body for a path no route matched: KServe's under /v1 and /v2, TorchServe's elsewhere."""
        return ErrorShape.KSERVE if path.startswith(("/v1/", "/v2/")) or path == "/v2" else ErrorShape.TORCHSERVE


# -- answers shared by many routes ----------------------------------------------------------------

def _ts(status: int, description: str) -> Answer:
    return Answer(status, description, "TorchServeError")


def _ks(status: int, description: str) -> Answer:
    return Answer(status, description, "KServeError")


TS_UNAUTHORIZED = _ts(401, "a token is set and the request does not carry it (Authorization: Bearer <token>)")
KS_UNAUTHORIZED = _ks(401, "a token is set and the request does not carry it (Authorization: Bearer <token>)")
TS_NO_MODEL = _ts(404, "no such model or version")
KS_NO_MODEL = _ks(404, "no such model or version")
DESCRIPTION = (Answer(200, "this port's OpenAPI 3 document", "OpenAPI"),)


def _versioned(template: str, suffix: str = "") -> tuple[str, str]:
    """A model route's two forms: the default version, and one version by name."""
    return template + suffix, template + "/versions/{model_version}" + suffix


def _description_routes(tag: str) -> tuple[Route, ...]:
    return (
        Route("OPTIONS", "/", "api_description", "this port's API description (as TorchServe answers it)", tag,
              DESCRIPTION, token=False),
        Route("GET", "/api-description", "api_description", "this port's API description", tag, DESCRIPTION,
              token=False),
    )


# -- the inference port -----------------------------------------------------------------------------

_PREDICT_ANSWERS = (
    Answer(200, "the handler's output, in the content type it chose", None, ("*/*",)),
    _ts(400, "the request could not be read (a malformed body, a bad Content-Length)"),
    TS_UNAUTHORIZED, TS_NO_MODEL,
    _ts(408, "the model did not answer within its response timeout"),
    _ts(413, "the body is larger than max_request_size"),
    _ts(500, "the model's handler raised while answering this request"),
    _ts(503, "the model has no ready worker, its queue is full, or the server is stopping"),
)
_V2_INFER_ANSWERS = (
    Answer(200, "the output tensors: JSON, or (binary outputs asked for) a JSON header then the raw tensors",
           "V2InferResponse", ("application/json", "application/octet-stream")),
    _ks(400, "the request is not a valid inference request for this model"), KS_UNAUTHORIZED, KS_NO_MODEL,
    _ks(408, "the model did not answer within its response timeout"),
    _ks(413, "the body is larger than max_request_size"),
    _ks(500, "the model's handler raised, or its answer is larger than max_response_size"),
    _ks(503, "the model has no ready worker, its queue is full, or the server is stopping"),
)
_V1_PREDICT_ANSWERS = (
    Answer(200, "one prediction per row", "V1Predictions"),
    _ks(400, "the request is not {\"instances\": [...]} or {\"inputs\": ...}"), KS_UNAUTHORIZED, KS_NO_MODEL,
    _ks(408, "the model did not answer within its response timeout"),
    _ks(413, "the body is larger than max_request_size"),
    _ks(500, "the model's handler raised while answering a row"),
    _ks(503, "the model has no ready worker, its queue is full, or the server is stopping"),
)


def _inference_routes() -> tuple[Route, ...]:
    routes: list[Route] = [
        *_description_routes("description"),
        Route("GET", "/ping", "ping", "health: Healthy, or Unhealthy naming each model marked failed", "health",
              (Answer(200, "every model loads", "Ping"), Answer(500, "a model is marked failed", "Ping")),
              token=False),
        Route("GET", "/v2/health/live", "live", "KServe v2: the server is live", "health",
              (Answer(200, "live", "V2Live"),), token=False, errors=ErrorShape.KSERVE),
        Route("GET", "/v2/health/ready", "ready", "KServe v2: every model is ready", "health",
              (Answer(200, "ready", "V2Ready"), Answer(503, "a model is not ready", "V2Ready")),
              token=False, errors=ErrorShape.KSERVE),
        Route("GET", "/v2", "server_metadata", "KServe v2 server metadata", "kserve-v2",
              (Answer(200, "name, version, extensions", "V2ServerMetadata"), KS_UNAUTHORIZED),
              errors=ErrorShape.KSERVE),
        Route("GET", "/v2/models/stats", "all_statistics", "Triton's statistics extension: every model",
              "kserve-v2", (Answer(200, "statistics", "V2Statistics"), KS_UNAUTHORIZED), errors=ErrorShape.KSERVE),
    ]
    for method in ("POST", "PUT"):
        for template in ("/predictions/{model_name}", "/predictions/{model_name}/{model_version}"):
            routes.append(Route(method, template, "predictions",
                                "TorchServe predictions: the body goes to the model's handler as it is",
                                "torchserve", _PREDICT_ANSWERS, body="*"))
    model_answers = (KS_UNAUTHORIZED, KS_NO_MODEL)
    for suffix, method, operation, summary, answers, body in (
        ("", "GET", "model_metadata", "KServe v2 model metadata",
         (Answer(200, "the model's tensors and settings", "V2ModelMetadata"),), None),
        ("/ready", "GET", "model_ready", "KServe v2 model readiness",
         (Answer(200, "ready", "V2ModelReady"), Answer(503, "not ready", "V2ModelReady")), None),
        ("/infer", "POST", "infer", "KServe v2 inference: tensors in, tensors out", _V2_INFER_ANSWERS,
         "V2InferRequest"),
        ("/config", "GET", "model_config", "Triton's model configuration extension",
         (Answer(200, "the model's configuration", "V2ModelConfig"),), None),
        ("/stats", "GET", "model_statistics", "Triton's statistics extension: one model",
         (Answer(200, "statistics", "V2Statistics"),), None),
    ):
        for template in _versioned("/v2/models/{model_name}", suffix):
            routes.append(Route(method, template, operation, summary, "kserve-v2",
                                tuple(dict.fromkeys(answers + model_answers)), body=body, errors=ErrorShape.KSERVE))
    for template in _versioned("/v1/models/{model_name}"):
        routes.append(Route("GET", template, "v1_status", "KServe v1 / TF Serving model status", "kserve-v1",
                            (Answer(200, "ready and each version's state", "V1Status"), KS_UNAUTHORIZED,
                             KS_NO_MODEL), errors=ErrorShape.KSERVE))
        routes.append(Route("POST", template + ":predict", "v1_predict", "KServe v1 / TF Serving predict",
                            "kserve-v1", _V1_PREDICT_ANSWERS, body="V1PredictRequest", errors=ErrorShape.KSERVE))
    return tuple(routes)


INFERENCE_ROUTES = _inference_routes()

# -- the management port ----------------------------------------------------------------------------

_REGISTER_QUERY = (
    Param("url", "an archive: a .mar (or folder) name in the model store, or an allowed URL", required=True),
    Param("model_name", "the name to serve it under (default: the archive's)"),
    Param("batch_size", "the largest batch the handler gets", "integer", 1),
    Param("max_batch_delay", "milliseconds to wait for a batch to fill", "number", 0),
    Param("initial_workers", "workers to start (default: the server's workers per model)", "integer", 0),
    Param("synchronous", "answer once the workers are ready (default true)", "boolean"),
    Param("response_timeout", "seconds a request may take", "number", 1),
    Param("startup_timeout", "seconds a worker may take to load", "number", 1),
    Param("sha256", "the archive's expected SHA-256"),
    Param("runtime", "python (the only runtime)"),
    Param("s3_sse_kms", "TorchServe's; accepted and ignored", "boolean"),
    Param("optimization", "an optimization spec, e.g. bf16,channels_last,torchscript"),
    Param("handler", "a handler to use instead of the archive's"),
    Param("number_gpu", "TorchServe's; CPUs only here (0)", "integer", 0),
    Param("streams", "inference streams per worker", "integer", 1),
)
_SCALE_QUERY = (
    Param("min_worker", "workers to keep", "integer", 0),
    Param("max_worker", "the most workers (at least min_worker)", "integer", 0),
    Param("synchronous", "answer once the workers are ready (default false)", "boolean"),
    Param("timeout", "seconds to wait for draining workers (-1: forever)", "number", -1),
    Param("number_gpu", "TorchServe's; CPUs only here (0)", "integer", 0),
)
_MANAGED = (_ts(400, "a parameter this endpoint does not take, or a bad value"),
            _ts(401, "a token is set and the request does not carry it"),
            _ts(403, "a cross-origin (browser) request, or a Host that is not this API's"))


def _management_routes() -> tuple[Route, ...]:
    status = Answer(200, "done", "Status")
    routes: list[Route] = [
        *_description_routes("description"),
        Route("GET", "/ping", "ping", "the management API is up", "health", (Answer(200, "up", "Ping"),), token=False),
        Route("GET", "/models", "list_models", "the registered models, a page at a time", "models",
              (Answer(200, "a page of models", "ModelList"), _ts(400, "a bad parameter"), *_MANAGED),
              query=(Param("limit", "models per page (default 100)", "integer", 1),
                     Param("next_page_token", "where the page starts", "integer", 0))),
        Route("POST", "/models", "register", "register a model from an archive", "models",
              (status, _ts(400, "a bad parameter or a bad archive"), _ts(404, "no such archive"),
               _ts(405, "registering is disabled (enable_model_api=false)"),
               _ts(408, "the workers did not start in startup_timeout"), _ts(409, "the model is registered"),
               _ts(500, "the model failed to load"), *_MANAGED),
              query=_REGISTER_QUERY),
    ]
    for template in ("/models/{model_name}", "/models/{model_name}/{model_version}"):
        routes += [
            Route("GET", template, "describe", "the model's settings and workers, as applied "
                  "(model_version 'all': every version)", "models",
                  (Answer(200, "one entry per version", "ModelDescriptions"), TS_NO_MODEL, *_MANAGED)),
            Route("PUT", template, "scale", "scale the model's workers", "models",
                  (status, Answer(202, "scaling, not waited for", "Status"), _ts(400, "a bad parameter"),
                   TS_NO_MODEL, _ts(408, "the workers did not start in time"), *_MANAGED),
                  query=_SCALE_QUERY),
            Route("DELETE", template, "unregister", "unregister the model after its queued requests", "models",
                  (status, TS_NO_MODEL, _ts(405, "unregistering is disabled (enable_model_api=false)"),
                   _ts(408, "requests did not drain in time"), *_MANAGED)),
        ]
    routes.append(Route("PUT", "/models/{model_name}/{model_version}/set-default", "set_default",
                        "make this version the default", "models", (status, TS_NO_MODEL, *_MANAGED)))
    return tuple(routes)


MANAGEMENT_ROUTES = _management_routes()

# -- the metrics port -------------------------------------------------------------------------------

METRICS_ROUTES = (
    *_description_routes("description"),
    Route("GET", "/metrics", "metrics", "Prometheus metrics (TorchServe's names and launchkit's)", "metrics",
          (Answer(200, "Prometheus text format (OpenMetrics when asked for in Accept)", None,
                  ("text/plain", "application/openmetrics-text")),),
          query=(Param("name[]", "only these metric families", array=True),), token=False),
)
