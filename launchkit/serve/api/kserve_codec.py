"""KServe v2 (Open Inference Protocol) JSON tensors ↔ the items a handler sees. Pure functions.

A v2 infer request is split along its first (batch) dimension into one item per row, so the rows
go through the same queue, dynamic batching and handler as ``/predictions`` requests:

* one input tensor: each row is sent as JSON (a number or a nested list of shape ``shape[1:]``),
  or, for a ``BYTES`` scalar row, as its text (``text/plain``);
* several input tensors: each row is a JSON object ``{input name: row}``.

The handler's outputs, one per row, become one output tensor: numbers (or equal-shaped nested
lists of numbers) give an ``FP32``/``INT64`` tensor of shape ``[rows, ...]``; anything else (the
resnet example's top-5 dictionaries, text) gives a ``BYTES`` tensor of JSON strings, one per row.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from launchkit.core.errors import BadRequest
from launchkit.serve.wire import ItemResult

DATATYPES = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
             "FP64", "BYTES"}
MAX_ROWS = 4096
MAX_ELEMENTS = 16 * 2**20  # default cap on the values of one request (max_tensor_elements in config.properties)


@dataclass(frozen=True)
class V2Request:
    request_id: str | None
    rows: list[tuple[bytes, str]]  # (body, content type) per row
    output_name: str


def parse_infer(body: bytes, max_elements: int = MAX_ELEMENTS) -> V2Request:
    """The rows of a v2 infer request. Shapes are checked against the data and ``max_elements``
    before any row is built: an 85-byte shape must not make the server build millions of lists."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"the infer request is not valid JSON ({error})") from None
    except RecursionError:
        raise BadRequest("the infer request is JSON nested too deeply to decode") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise BadRequest('expected {"inputs": [{"name", "shape", "datatype", "data"}, ...]}')
    tensors = [_tensor(item, index, max_elements) for index, item in enumerate(request["inputs"])]
    batch = {shape[0] for _, shape, _, _ in tensors}
    if len(batch) != 1:
        raise BadRequest(f"inputs disagree on the batch (first) dimension: {sorted(batch)}")
    count = batch.pop()
    if count < 1 or count > MAX_ROWS:
        raise BadRequest(f"the batch dimension is {count}; expected 1 to {MAX_ROWS} rows")
    per_input = {name: _split_rows(data, shape) for name, shape, _, data in tensors}
    rows = []
    for index in range(count):
        if len(tensors) == 1:
            name, shape, datatype, _ = tensors[0]
            value = per_input[name][index]
            if datatype == "BYTES" and isinstance(value, str):
                rows.append((value.encode(), "text/plain; charset=utf-8"))
            else:
                rows.append((json.dumps(value).encode(), "application/json"))
        else:
            rows.append((json.dumps({name: per_input[name][index] for name in per_input}).encode(), "application/json"))
    outputs = request.get("outputs")
    output_name = "output0"
    if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict) and isinstance(outputs[0].get("name"), str):
        output_name = outputs[0]["name"]
    request_id = request.get("id")
    return V2Request(str(request_id) if request_id is not None else None, rows, output_name)


def _tensor(item: Any, index: int, max_elements: int) -> tuple[str, list[int], str, list[Any]]:
    if not isinstance(item, dict):
        raise BadRequest(f"inputs[{index}] is not an object")
    name, shape, datatype, data = item.get("name"), item.get("shape"), item.get("datatype"), item.get("data")
    where = f"input {name!r}" if isinstance(name, str) else f"inputs[{index}]"
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{where}: name is missing")
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1
                                                           for d in shape):
        raise BadRequest(f"{where}: shape must be a non-empty list of positive integers, got {str(shape)[:100]}")
    if math.prod(shape) > max_elements:
        raise BadRequest(f"{where}: shape {shape} holds {math.prod(shape):,} values; the server takes at most "
                         f"{max_elements:,} per request (max_tensor_elements)")
    if datatype not in DATATYPES:
        raise BadRequest(f"{where}: datatype {datatype!r} is not one of {', '.join(sorted(DATATYPES))}")
    if not isinstance(data, list):
        raise BadRequest(f"{where}: data must be a list")
    flat = _flatten(data)
    if len(flat) != math.prod(shape):
        raise BadRequest(f"{where}: shape {shape} holds {math.prod(shape)} values but data has {len(flat)}")
    if datatype == "BYTES":
        if not all(isinstance(value, str) for value in flat):
            raise BadRequest(f"{where}: BYTES data must be strings")
    elif not all(isinstance(value, (int, float)) and not isinstance(value, str) for value in flat):
        raise BadRequest(f"{where}: {datatype} data must be numbers")
    return name, shape, datatype, flat


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _split_rows(flat: list[Any], shape: list[int]) -> list[Any]:
    inner = shape[1:]
    size = math.prod(inner)
    return [_nest(flat[row * size:(row + 1) * size], inner) for row in range(shape[0])]


def _nest(flat: list[Any], shape: list[int]) -> Any:
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return flat
    step = math.prod(shape[1:])
    return [_nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def build_response(model: str, version: str, request_id: str | None, output_name: str,
                   results: list[ItemResult]) -> tuple[int, bytes]:
    """The v2 response for the rows' results; the first failed row's status and message if any failed."""
    for result in results:
        if result.status >= 400:
            try:
                message = json.loads(result.body).get("message") or result.body.decode(errors="replace")
            except (ValueError, AttributeError):
                message = result.body.decode(errors="replace")
            return result.status, json.dumps({"error": message}).encode()
    values = [_decode(result) for result in results]
    shapes = {_numeric_shape(value) for value in values}
    if len(shapes) == 1 and None not in shapes:
        inner = list(shapes.pop())
        flat = [x for value in values for x in (_flatten(value) if isinstance(value, list) else [value])]
        datatype = "INT64" if all(isinstance(x, int) and not isinstance(x, bool) for x in flat) else "FP32"
        output = {"name": output_name, "shape": [len(values), *inner], "datatype": datatype, "data": flat}
    else:
        data = [value if isinstance(value, str) else json.dumps(value) for value in values]
        output = {"name": output_name, "shape": [len(values)], "datatype": "BYTES", "data": data}
    body = {"model_name": model, "model_version": version, "outputs": [output]}
    if request_id is not None:
        body["id"] = request_id
    return 200, json.dumps(body).encode()


def _decode(result: ItemResult) -> Any:
    content_type = result.content_type.split(";")[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            return json.loads(result.body)
        except ValueError:
            pass
    return result.body.decode(errors="replace")


def _numeric_shape(value: Any) -> tuple[int, ...] | None:
    """The shape of a number or a regular nested list of numbers; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return ()
    if isinstance(value, list) and value:
        shapes = {_numeric_shape(item) for item in value}
        if len(shapes) == 1 and None not in shapes:
            return (len(value), *shapes.pop())
    return None
