"""KServe v1 / TensorFlow Serving REST routes of the inference API.

``GET /v1/models/{model}[/versions/{v}]`` answers both protocols' status forms at once: KServe v1's
``{"name", "ready"}`` and TF Serving's ``{"model_version_status": [...]}``.
``POST /v1/models/{model}[/versions/{v}]:predict`` takes ``{"instances": [...]}`` (row form: one
instance per row) or ``{"inputs": ...}`` (columnar form: a list of rows, or ``{input name: rows}``)
and answers ``{"predictions": [...]}``, one per row; errors are ``{"error": message}``.

Each row is queued as its own item, so rows of one request and of concurrent requests are batched
together by the model's dynamic batching, exactly as ``/predictions`` requests are. What the
handler sees for a row: the instance's JSON value; a string instance as text; ``{"b64": ...}``
(TF Serving's binary convention) as the decoded bytes, like a ``/predictions`` body.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any

from launchkit.core.errors import BadRequest, LaunchkitError
from launchkit.serve.api.asgi import BodyReader, Receive, Scope, Send
from launchkit.serve.api.kserve_codec import decode_result, first_failure
from launchkit.serve.api.responses import kserve_error, send_json
from launchkit.serve.api.rows import run_rows
from launchkit.serve.scheduling.registry import Registry, ServedModel
from launchkit.serve.wire import ItemResult

MAX_ROWS = 4096


def parse_predict(body: bytes) -> list[tuple[bytes, str]]:
    """The rows of a ``:predict`` request as (body, content type) items."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"the predict request is not valid JSON ({error})") from None
    except RecursionError:
        raise BadRequest("the predict request is JSON nested too deeply to decode") from None
    if not isinstance(request, dict) or ("instances" not in request and "inputs" not in request):
        raise BadRequest('expected {"instances": [...]} (row form) or {"inputs": ...} (columnar form)')
    if "instances" in request and "inputs" in request:
        raise BadRequest('give either "instances" (row form) or "inputs" (columnar form), not both')
    if "instances" in request:
        rows = request["instances"]
        if not isinstance(rows, list):
            raise BadRequest('"instances" must be a list with one instance per row')
    else:
        rows = _columns_to_rows(request["inputs"])
    if not rows:
        raise BadRequest("the request has no rows (an empty list)")
    if len(rows) > MAX_ROWS:
        raise BadRequest(f"the request has {len(rows)} rows; at most {MAX_ROWS} are taken")
    return [_row(value, index) for index, value in enumerate(rows)]


def _columns_to_rows(inputs: Any) -> list[Any]:
    if isinstance(inputs, list):
        return inputs
    if not isinstance(inputs, dict) or not inputs:
        raise BadRequest('"inputs" must be a list of rows or {input name: list of rows}')
    lengths = {}
    for name, column in inputs.items():
        if not isinstance(column, list):
            raise BadRequest(f'"inputs": input {name!r} must be a list with one value per row')
        lengths[name] = len(column)
    if len(set(lengths.values())) != 1:
        raise BadRequest(f'"inputs" disagree on the number of rows: {lengths}')
    return [{name: column[index] for name, column in inputs.items()} for index in range(next(iter(lengths.values())))]


def _row(value: Any, index: int) -> tuple[bytes, str]:
    if isinstance(value, dict) and set(value) == {"b64"}:
        if not isinstance(value["b64"], str):
            raise BadRequest(f"row {index}: b64 must be a base64 string")
        try:
            return base64.b64decode(value["b64"], validate=True), "application/octet-stream"
        except (binascii.Error, ValueError):
            raise BadRequest(f"row {index}: b64 is not valid base64") from None
    if isinstance(value, str):
        return value.encode(), "text/plain; charset=utf-8"
    return json.dumps(value).encode(), "application/json"


def predictions(results: list[ItemResult]) -> tuple[int, bytes]:
    """``{"predictions": [...]}``, or the first failed row's status and ``{"error": message}``."""
    failure = first_failure(results)
    if failure is not None:
        return failure
    return 200, json.dumps({"predictions": [decode_result(result) for result in results]}).encode()


class V1Routes:
    def __init__(self, registry: Registry, read_body: BodyReader) -> None:
        self.registry = registry
        self.read_body = read_body

    def status(self, model: ServedModel, version: str | None) -> dict[str, Any]:
        """KServe v1's ``{"name", "ready"}`` and TF Serving's ``model_version_status``, at once."""
        versions = [model] if version is not None else list(self.registry.models[model.name].values())
        return {
            "name": model.name, "ready": model.ready,
            "model_version_status": [{
                "version": served.version, "state": "AVAILABLE" if served.ready else "LOADING",
                "status": {"error_code": "OK" if served.failure is None else "UNKNOWN",
                           "error_message": served.failure or ""},
            } for served in versions],
        }

    async def predict(self, model: ServedModel, scope: Scope, receive: Receive, send: Send,
                       request_id: str) -> None:
        started = time.perf_counter()
        headers: tuple[tuple[bytes, bytes], ...] = ()
        try:
            declared = next((value for name, value in scope["headers"] if name == b"content-length"), b"")
            rows = parse_predict(await self.read_body(declared, receive))
            status, payload = predictions(await run_rows(model, rows, request_id))
        except LaunchkitError as error:
            status, payload, headers = kserve_error(error)
        await send_json(send, status, payload, request_id, headers)
        if model.metrics is not None:
            model.metrics.request_done(status, time.perf_counter() - started)
