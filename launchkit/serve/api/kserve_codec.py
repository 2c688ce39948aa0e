"""KServe v2 (Open Inference Protocol) requests ↔ the items a handler sees. Pure functions.

A v2 infer request is split along its first (batch) dimension into one item per row, so the rows
go through the same queue, dynamic batching and handler as ``/predictions`` requests. What the
handler sees for a row (``data[i]["body"]``):

* one input tensor: the row's values, nested to the row's shape (a number for a scalar row) when
  the tensor came as JSON, or a ``torch.Tensor`` of the row's shape made over the request's bytes
  when it came as binary data (``torch.as_tensor(value)`` takes both); a row of one ``BYTES``
  element is its text (JSON) or its raw bytes (binary), the same as a ``/predictions`` body;
* several input tensors: ``{input name: row value}``.

Tensors may come as JSON ``data`` or, with the binary tensor data extension, as raw little-endian
bytes after a JSON header whose length is the ``Inference-Header-Content-Length`` header. Binary
rows are cut by byte offsets here and turned into values in the worker (:mod:`launchkit.serve.tensors`).

The handler's outputs, one per row, become the output tensor(s): numbers (or equal-shaped nested
lists of numbers) give a numeric tensor of shape ``[rows, ...]`` (the declared datatype, else
``FP32``/``INT64``); rows that are ``{output name: value}`` for every declared output give one
tensor each; anything else (top-5 dictionaries, text) gives a ``BYTES`` tensor of JSON strings.
Outputs go back as binary data when the request asks (``binary_data_output`` or an output's
``binary_data``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from launchkit.core.errors import BadRequest
from launchkit.serve.tensors import (
    DATATYPES, ROWS_CONTENT_TYPE, DataType, ModelTensors, TensorSpec, bytes_elements, datatype, encode_row, nest,
    pack_values, split_binary,
)
from launchkit.serve.wire import ItemResult

MAX_ROWS = 4096
MAX_ELEMENTS = 16 * 2**20  # default cap on the values of one request (max_tensor_elements in config.properties)
BINARY = "application/octet-stream"


@dataclass(frozen=True)
class OutputRequest:
    name: str
    binary: bool | None  # None: as binary_data_output says


@dataclass(frozen=True)
class V2Request:
    request_id: str | None
    rows: list[tuple[bytes, str]]  # (body, content type) per row
    inputs: tuple[TensorSpec, ...]  # as sent, the batch dimension as -1
    outputs: tuple[OutputRequest, ...]  # as asked; empty: every output
    binary_output: bool


@dataclass(frozen=True)
class V2Response:
    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    outputs: tuple[TensorSpec, ...] = ()


@dataclass(frozen=True)
class _Tensor:
    name: str
    kind: DataType
    shape: list[int]
    flat: list[Any] | None  # JSON data
    binary: list[memoryview] | None  # binary data, one slice per row


def parse_infer(body: bytes, header_length: int | None = None, max_elements: int = MAX_ELEMENTS,
                declared: ModelTensors | None = None) -> V2Request:
    """The rows of a v2 infer request. Shapes are checked against the data and ``max_elements``
    before any row is built: an 85-byte shape must not make the server build millions of lists."""
    binary = None
    if header_length is not None:
        if header_length > len(body):
            raise BadRequest(f"Inference-Header-Content-Length is {header_length} but the body has only "
                             f"{len(body)} bytes")
        binary = memoryview(body)[header_length:]
        body = body[:header_length]
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        looks_binary = isinstance(error, UnicodeDecodeError) or "Extra data" in str(error) or \
            not body.lstrip().startswith(b"{")
        hint = " (binary tensors need the Inference-Header-Content-Length header)" \
            if header_length is None and looks_binary else ""
        raise BadRequest(f"the infer request is not valid JSON ({error}){hint}") from None
    except RecursionError:
        raise BadRequest("the infer request is JSON nested too deeply to decode") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise BadRequest('expected {"inputs": [{"name", "shape", "datatype", "data"}, ...]}')
    cursor = [0]
    tensors = [_tensor(item, index, max_elements, binary, cursor) for index, item in enumerate(request["inputs"])]
    if binary is not None and cursor[0] != len(binary):
        raise BadRequest(f"the body has {len(binary) - cursor[0]} bytes of binary data that no input claims "
                         "(binary_data_size)")
    if declared is not None and declared.inputs:
        _check_declared(tensors, declared.inputs)
    batch = {tensor.shape[0] for tensor in tensors}
    if len(batch) != 1:
        raise BadRequest(f"inputs disagree on the batch (first) dimension: {sorted(batch)}")
    count = batch.pop()
    if count > MAX_ROWS:
        raise BadRequest(f"the batch dimension is {count}; expected 1 to {MAX_ROWS} rows")
    rows = _binary_rows(tensors, count) if binary is not None else _json_rows(tensors, count)
    parameters = request.get("parameters")
    binary_output = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
    request_id = request.get("id")
    return V2Request(str(request_id) if request_id is not None else None, rows,
                     tuple(TensorSpec(t.name, t.kind.name, (-1, *t.shape[1:])) for t in tensors),
                     _output_requests(request.get("outputs")), binary_output)


def _tensor(item: Any, index: int, max_elements: int, binary: memoryview | None, cursor: list[int]) -> _Tensor:
    if not isinstance(item, dict):
        raise BadRequest(f"inputs[{index}] is not an object")
    name, shape = item.get("name"), item.get("shape")
    where = f"input {name!r}" if isinstance(name, str) else f"inputs[{index}]"
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{where}: name is missing")
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1
                                                           for d in shape):
        raise BadRequest(f"{where}: shape must be a non-empty list of positive integers, got {str(shape)[:100]}")
    size = math.prod(shape)
    if size > max_elements:
        raise BadRequest(f"{where}: shape {shape} holds {size:,} values; the server takes at most "
                         f"{max_elements:,} per request (max_tensor_elements)")
    kind = datatype(item.get("datatype"), where)
    given = item.get("parameters")
    parameters: dict[str, Any] = given if isinstance(given, dict) else {}
    if "binary_data_size" in parameters:
        length = parameters["binary_data_size"]
        if binary is None:
            raise BadRequest(f"{where}: binary_data_size is given but the request has no "
                             "Inference-Header-Content-Length header")
        if "data" in item:
            raise BadRequest(f"{where}: both data and binary_data_size are given; send one")
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            raise BadRequest(f"{where}: binary_data_size must be a byte count, got {str(length)[:40]}")
        start = cursor[0]
        if start + length > len(binary):
            raise BadRequest(f"{where}: binary_data_size {length} runs past the end of the body "
                             f"({len(binary) - start} bytes left)")
        cursor[0] = start + length
        return _Tensor(name, kind, shape, None, split_binary(binary[start:start + length], kind, shape, where))
    data = item.get("data")
    if not isinstance(data, list):
        raise BadRequest(f"{where}: data must be a list (or, binary, parameters.binary_data_size)")
    flat = _flatten(data)
    if len(flat) != size:
        raise BadRequest(f"{where}: shape {shape} holds {size} values but data has {len(flat)}")
    if kind.name == "BYTES":
        if not all(isinstance(value, str) for value in flat):
            raise BadRequest(f"{where}: BYTES data must be strings")
    elif not all(isinstance(value, (int, float)) and not isinstance(value, str) for value in flat):
        raise BadRequest(f"{where}: {kind.name} data must be numbers")
    return _Tensor(name, kind, shape, flat, None)


def _check_declared(tensors: list[_Tensor], declared: tuple[TensorSpec, ...]) -> None:
    by_name = {spec.name: spec for spec in declared}
    for tensor in tensors:
        spec = by_name.get(tensor.name)
        if spec is None:
            raise BadRequest(f"input {tensor.name!r} is not an input of this model; its inputs: "
                             f"{', '.join(by_name)} (GET /v2/models/MODEL lists them)")
        if spec.datatype != tensor.kind.name:
            raise BadRequest(f"input {tensor.name!r} is {tensor.kind.name}; the model takes {spec.datatype}")
        row = spec.shape[1:]
        if len(row) != len(tensor.shape) - 1 or any(d not in (-1, got) for d, got in zip(row, tensor.shape[1:])):
            raise BadRequest(f"input {tensor.name!r} has shape {tensor.shape}; the model takes "
                             f"{[-1, *row]} (-1: any size)")


def _output_requests(outputs: Any) -> tuple[OutputRequest, ...]:
    if outputs is None:
        return ()
    if not isinstance(outputs, list):
        raise BadRequest('outputs must be a list of {"name", "parameters"}')
    requests = []
    for index, output in enumerate(outputs):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise BadRequest(f"outputs[{index}] must be an object with a name")
        given = output.get("parameters")
        binary = given.get("binary_data") if isinstance(given, dict) else None
        requests.append(OutputRequest(output["name"], binary if isinstance(binary, bool) else None))
    return tuple(requests)


def _json_rows(tensors: list[_Tensor], count: int) -> list[tuple[bytes, str]]:
    per_input = {t.name: _split_rows(t.flat or [], t.shape) for t in tensors}
    rows = []
    for index in range(count):
        if len(tensors) == 1:
            value = per_input[tensors[0].name][index]
            if tensors[0].kind.name == "BYTES" and isinstance(value, list) and len(value) == 1:
                value = value[0]  # one text per row: the handler gets the text, as from /predictions
            if tensors[0].kind.name == "BYTES" and isinstance(value, str):
                rows.append((value.encode(), "text/plain; charset=utf-8"))
            else:
                rows.append((json.dumps(value).encode(), "application/json"))
        else:
            rows.append((json.dumps({name: per_input[name][index] for name in per_input}).encode(), "application/json"))
    return rows


def _binary_rows(tensors: list[_Tensor], count: int) -> list[tuple[bytes, str]]:
    only = tensors[0]
    if len(tensors) == 1 and only.binary is not None and only.kind.name == "BYTES" and math.prod(only.shape[1:]) == 1:
        # one BYTES element per row (an image, a text): the handler gets its bytes, as from /predictions
        return [(bytes_elements(row)[0], BINARY) for row in only.binary]
    if len(tensors) == 1 and only.binary is not None and only.kind.size:  # rows of one size: one header for all
        size = len(only.binary[0])
        prefix = encode_row([{"name": only.name, "datatype": only.kind.name, "shape": only.shape[1:], "size": size}], [])
        padding = b"\0" * (-size % 8)
        return [(b"".join((prefix, row, padding)), ROWS_CONTENT_TYPE) for row in only.binary]
    json_rows = {t.name: _split_rows(t.flat, t.shape) for t in tensors if t.flat is not None}
    rows = []
    for index in range(count):
        header, buffers = [], []
        for tensor in tensors:
            entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.kind.name, "shape": tensor.shape[1:]}
            if tensor.binary is not None:
                entry["size"] = len(tensor.binary[index])
                buffers.append(tensor.binary[index])
            else:
                entry["data"] = json_rows[tensor.name][index]
            header.append(entry)
        rows.append((encode_row(header, buffers), ROWS_CONTENT_TYPE))
    return rows


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
    return [nest(flat[row * size:(row + 1) * size], inner) for row in range(shape[0])]


# -- responses -----------------------------------------------------------------------------------

def build_response(model: str, version: str, request: V2Request, results: list[ItemResult],
                   declared: ModelTensors | None = None) -> V2Response:
    """The v2 response for the rows' results; the first failed row's status and message if any failed."""
    failure = first_failure(results)
    if failure is not None:
        return V2Response(*failure)
    values = [decode_result(result) for result in results]
    specs = {spec.name: spec for spec in declared.outputs} if declared is not None else {}
    columns = _columns(values, specs, request.outputs)
    wanted = {output.name: output for output in request.outputs}
    outputs, raws, tensors = [], [], []
    for name, column in columns.items():
        if wanted and name not in wanted:
            continue
        output, flat, kind = _output_tensor(name, column, specs.get(name))
        tensors.append(TensorSpec(name, kind.name, (-1, *output["shape"][1:])))
        asked = wanted.get(name)
        binary = asked.binary if asked is not None and asked.binary is not None else request.binary_output
        if binary:
            raw = pack_values(kind, flat)
            output["parameters"] = {"binary_data_size": len(raw)}
            raws.append(raw)
        else:
            output["data"] = flat
        outputs.append(output)
    body: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": outputs}
    if request.request_id is not None:
        body["id"] = request.request_id
    header = json.dumps(body).encode()
    if not raws:
        return V2Response(200, header, outputs=tuple(tensors))
    return V2Response(200, b"".join([header, *raws]),
                      ((b"inference-header-content-length", str(len(header)).encode()),), tuple(tensors))


def _columns(values: list[Any], specs: dict[str, TensorSpec], asked: tuple[OutputRequest, ...]) -> dict[str, list[Any]]:
    """Output name → one value per row."""
    names = list(specs) or [output.name for output in asked] or ["output0"]
    if len(specs) > 1 and all(isinstance(value, dict) and all(name in value for name in specs) for value in values):
        columns = {name: [value[name] for value in values] for name in specs}
    else:
        columns = {names[0]: values}
    unknown = [output.name for output in asked if output.name not in columns]
    if unknown and specs:
        raise BadRequest(f"output {unknown[0]!r} is not an output of this model; its outputs: {', '.join(columns)}")
    if unknown:  # nothing declared: the one output takes the name the client asked for
        columns = {unknown[0]: values}
    return columns


def _output_tensor(name: str, values: list[Any], spec: TensorSpec | None) -> tuple[dict[str, Any], list[Any], DataType]:
    shapes = {_numeric_shape(value) for value in values}
    shape = shapes.pop() if len(shapes) == 1 else None
    if shape is not None and (spec is None or spec.datatype != "BYTES"):
        inner = list(shape)
        if len(inner) == 1:
            flat = [x for value in values for x in value]
        elif not inner:
            flat = list(values)
        else:
            flat = [x for value in values for x in _flatten(value)]
        if spec is not None:
            kind = DATATYPES[spec.datatype]
        else:
            kind = DATATYPES["INT64" if all(isinstance(x, int) and not isinstance(x, bool) for x in flat) else "FP32"]
        if kind.name.startswith(("INT", "UINT")) and not all(isinstance(x, int) for x in flat):
            kind = DATATYPES["FP32"]  # the handler returned fractions for an integer output: keep them
        return {"name": name, "datatype": kind.name, "shape": [len(values), *inner]}, flat, kind
    flat = [value if isinstance(value, str) else json.dumps(value) for value in values]
    return {"name": name, "datatype": "BYTES", "shape": [len(values)]}, flat, DATATYPES["BYTES"]


def first_failure(results: list[ItemResult]) -> tuple[int, bytes] | None:
    """The status and ``{"error": message}`` body of the first row that failed, if one did."""
    for result in results:
        if result.status >= 400:
            try:
                message = json.loads(result.body).get("message") or result.body.decode(errors="replace")
            except (ValueError, AttributeError):
                message = result.body.decode(errors="replace")
            return result.status, json.dumps({"error": message}).encode()
    return None


def decode_result(result: ItemResult) -> Any:
    """A row's output as a value: JSON decoded, anything else as text."""
    content_type = result.content_type.split(";")[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            return json.loads(result.body)
        except ValueError:
            pass
    return result.body.decode(errors="replace")


def _numeric_shape(value: Any) -> tuple[int, ...] | None:
    """The shape of a number or a regular nested list of numbers; None for anything else."""
    kind = type(value)
    if kind is float or kind is int:
        return ()
    if kind is list and value and type(value[0]) is not list:  # the common case, a row of numbers: no recursion
        return (len(value),) if all(type(x) is float or type(x) is int for x in value) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return ()
    if isinstance(value, list) and value:
        shapes = {_numeric_shape(item) for item in value}
        inner = shapes.pop() if len(shapes) == 1 else None
        if inner is not None:
            return (len(value), *inner)
    return None
