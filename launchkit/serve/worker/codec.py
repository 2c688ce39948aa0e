"""Request bodies → what a handler sees, and a handler's outputs → response bodies, TorchServe's way."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs

from launchkit.core.errors import BadRequest
from launchkit.serve.tensors import DATATYPES, ROWS_CONTENT_TYPE, bytes_elements, nest
from launchkit.serve.wire import ItemRequest


def decode_item(item: ItemRequest) -> dict[str, Any]:
    """TorchServe's decoding: JSON → objects, text → str, multipart/urlencoded → fields, else bytes."""
    content_type = item.content_type.split(";")[0].strip().lower()
    body = item.body
    if content_type == ROWS_CONTENT_TYPE:  # a row of a v2 request with binary tensors
        return {"body": decode_row(body)}
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            return {"body": json.loads(body)}
        except ValueError as error:
            raise BadRequest(f"body is not valid JSON ({error})") from None
        except RecursionError:
            raise BadRequest("body is JSON nested too deeply to decode") from None
    if content_type.startswith("text/"):
        try:
            return {"body": body.decode()}
        except UnicodeDecodeError:
            raise BadRequest("text body is not valid UTF-8") from None
    if content_type == "multipart/form-data":
        return form_fields(body, item.content_type)
    if content_type == "application/x-www-form-urlencoded":
        # curl -d and urllib label any body this way; a body that is not a form is passed on raw.
        try:
            fields = parse_qs(body.decode(), strict_parsing=True)
            return {key: values[0] for key, values in fields.items()}
        except (ValueError, UnicodeDecodeError):
            pass
    return {"body": body}


BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
FIELD_NAME = re.compile(rb'(?:^|;)\s*name="([^"]*)"|(?:^|;)\s*name=([^;\s]+)', re.IGNORECASE)


def form_fields(body: bytes | bytearray, content_type: str) -> dict[str, Any]:
    """The named parts of a multipart/form-data body (RFC 7578), name → bytes.

    Split on the boundary directly: the standard library's email parser costs more than the small
    models' inference for one small part, and perf_analyzer's TorchServe mode uploads every
    request this way (benchmarks/drop_in.py measures that mode)."""
    found = BOUNDARY.search(content_type)
    if found is None:
        raise BadRequest("multipart body could not be parsed (its content type has no boundary=)")
    delimiter = b"\r\n--" + (found.group(1) or found.group(2)).encode("latin-1")
    parts = (b"\r\n" + bytes(body)).split(delimiter)
    fields: dict[str, Any] = {}
    for part in parts[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, separator, content = part.partition(b"\r\n\r\n")
        if not separator:
            raise BadRequest("multipart body could not be parsed (a part has no blank line after its headers)")
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-disposition:"):
                name = FIELD_NAME.search(line.split(b":", 1)[1])
                if name is not None:  # name="" is a name (empty), not a missing one
                    raw = name.group(1) if name.group(1) is not None else name.group(2)
                    fields[raw.decode("utf-8", errors="replace")] = content
    if not fields:
        raise BadRequest("multipart body has no named fields")
    return fields


def encode_output(value: Any) -> tuple[str, bytes]:
    if isinstance(value, (bytes, bytearray)):
        return "application/octet-stream", bytes(value)
    if isinstance(value, str):
        return "text/plain; charset=utf-8", value.encode()
    return "application/json", json.dumps(value, default=_jsonable).encode()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"output of type {type(value).__name__} is not JSON serialisable")


TORCH_DTYPES = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
                "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64", "FP16": "float16",
                "FP32": "float32", "FP64": "float64"}


def decode_row(body: bytes | bytearray) -> Any:
    """:func:`_decode_row`, with any malformed row a 400: the frontend writes these rows, but a client can
    send the same content type to /predictions (found by fuzz/run.py multipart)."""
    try:
        return _decode_row(body)
    except BadRequest:
        raise
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, RuntimeError, RecursionError) as error:
        raise BadRequest(f"a body of type {ROWS_CONTENT_TYPE} (launchkit's own row format) that is not one: "
                         f"{type(error).__name__}: {str(error)[:200]}") from None


def _decode_row(body: bytes | bytearray) -> Any:
    """What the handler sees for one row of a v2 request with binary tensors (the format is in
    :mod:`launchkit.serve.tensors`): a numeric tensor as a ``torch.Tensor`` of the row's shape,
    made over the request's bytes without copying them; BYTES elements as bytes (nested lists for
    several per row); an input that came as JSON as its values. Several inputs: ``{name: value}``."""
    import torch

    end = body.find(b"\n")
    if end < 0:
        raise BadRequest("tensor row without its header line")
    header = json.loads(bytes(body[:end]))
    if not isinstance(header, list) or not header:
        raise BadRequest(f"a body of type {ROWS_CONTENT_TYPE} (launchkit's own row format) that is not one: its "
                         "header is not a list of tensors")
    if not isinstance(body, bytearray):
        body = bytearray(body)  # torch.frombuffer wants a writable buffer; rows under 64 KiB come as bytes
    offset = end + 1
    values = {}
    for tensor in header:
        if "data" in tensor:
            values[tensor["name"]] = tensor["data"]
            continue
        size, kind, shape = tensor["size"], DATATYPES[tensor["datatype"]], tensor["shape"]
        if kind.size:
            dtype = getattr(torch, TORCH_DTYPES[kind.name])
            values[tensor["name"]] = torch.frombuffer(body, dtype=dtype, count=size // kind.size,
                                                      offset=offset).reshape(shape)
        else:
            values[tensor["name"]] = nest(bytes_elements(memoryview(body)[offset:offset + size]), shape)
        offset += size + (-size % 8)  # buffers are padded to 8 bytes
    return next(iter(values.values())) if len(values) == 1 else values
