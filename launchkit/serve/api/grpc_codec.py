"""The Open Inference Protocol's gRPC messages ↔ its HTTP binary form. Pure functions.

A ``ModelInferRequest`` is rewritten as the HTTP binary tensor data extension's body (a JSON header
whose inputs carry ``binary_data_size``, then the raw bytes), so one parser
(:func:`launchkit.serve.api.kserve_codec.parse_infer`) checks shapes, sizes and datatypes for both
protocols, and rows of gRPC and HTTP requests batch together. Typed contents (``fp32_contents``, …)
are packed little-endian first; ``raw_input_contents`` are taken as they are. Every output is asked
as binary and the answer's raw bytes become ``raw_output_contents``, as Triton answers over gRPC.
"""

from __future__ import annotations

import json
import struct
from enum import Enum
from typing import Any

from launchkit.core.errors import BadRequest
from launchkit.serve.api.kserve_codec import V2Response
from launchkit.serve.tensors import DATATYPES, pack_bytes, pack_values

# InferTensorContents' field for each datatype (FP16 and BF16 have none: raw contents only)
CONTENTS_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


class GrpcStatus(Enum):
    """The gRPC status for an HTTP status of the protocol (the names of ``grpc.StatusCode``)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    NOT_FOUND = "NOT_FOUND"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    INTERNAL = "INTERNAL"


def grpc_status(http_status: int) -> GrpcStatus:
    if http_status == 401:
        return GrpcStatus.UNAUTHENTICATED
    if http_status == 404:
        return GrpcStatus.NOT_FOUND
    if http_status in (413, 429, 507):
        return GrpcStatus.RESOURCE_EXHAUSTED
    if http_status == 503:
        return GrpcStatus.UNAVAILABLE
    if http_status == 504:
        return GrpcStatus.DEADLINE_EXCEEDED
    if 400 <= http_status < 500:
        return GrpcStatus.INVALID_ARGUMENT
    return GrpcStatus.INTERNAL


def parameter_value(parameter: Any) -> Any:
    """An ``InferParameter``'s value (whichever of its oneof is set), or None."""
    which = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, which) if which else None


def infer_body(request: Any) -> tuple[bytes, int]:
    """A ``ModelInferRequest`` as an HTTP binary infer body and its JSON header's length."""
    raw_contents = list(request.raw_input_contents)
    if raw_contents and len(raw_contents) != len(request.inputs):
        raise BadRequest(f"the request has {len(request.inputs)} inputs but {len(raw_contents)} "
                         "raw_input_contents: give one raw buffer per input, in the inputs' order, or none")
    inputs, buffers = [], []
    for index, tensor in enumerate(request.inputs):
        where = f"input {tensor.name!r}"
        if raw_contents:
            if tensor.HasField("contents"):
                raise BadRequest(f"{where} has contents while the request uses raw_input_contents: use one or the "
                                 "other for every input")
            raw = raw_contents[index]
        else:
            raw = _packed_contents(tensor, where)
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape),
                                 "parameters": {"binary_data_size": len(raw)}}
        inputs.append(entry)
        buffers.append(raw)
    header: dict[str, Any] = {"inputs": inputs, "parameters": {"binary_data_output": True}}
    if request.id:
        header["id"] = request.id
    if len(request.outputs):
        header["outputs"] = [{"name": output.name, "parameters": {"binary_data": True}} for output in request.outputs]
    encoded = json.dumps(header).encode()
    return b"".join([encoded, *buffers]), len(encoded)


def _packed_contents(tensor: Any, where: str) -> bytes:
    field = CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        known = ", ".join(DATATYPES)
        raise BadRequest(f"{where}: datatype {tensor.datatype!r} has no typed contents; expected one of {known} "
                         "(FP16 goes in raw_input_contents)" if tensor.datatype in DATATYPES else
                         f"{where}: datatype {tensor.datatype!r} is not one of {known}")
    values = list(getattr(tensor.contents, field))
    if tensor.datatype == "BYTES":
        return pack_bytes(values)
    try:
        return pack_values(DATATYPES[tensor.datatype], values)
    except struct.error as error:  # int_contents holding 300 for an INT8 tensor
        raise BadRequest(f"{where}: a value does not fit {tensor.datatype} ({error})") from None


def split_response(response: V2Response) -> tuple[dict[str, Any], list[bytes]]:
    """A successful binary v2 answer as (its JSON header, the raw bytes of each output in order)."""
    length = next((int(value) for name, value in response.headers if name == b"inference-header-content-length"),
                  len(response.body))
    header = json.loads(response.body[:length])
    raws, cursor = [], length
    for output in header.get("outputs", []):
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:  # not binary (cannot happen: every output is asked as binary); pack its data
            raws.append(pack_values(DATATYPES[output["datatype"]], output.get("data", [])))
            continue
        raws.append(response.body[cursor:cursor + size])
        cursor += size
    return header, raws


def error_message(response: V2Response) -> str:
    """The message of a protocol error body, ``{"error": message}``."""
    try:
        body = json.loads(response.body)
    except ValueError:
        return response.body.decode(errors="replace")
    return str(body.get("error", body)) if isinstance(body, dict) else str(body)


def numeric_versions(version: str) -> list[int]:
    """A version as Triton's integer version policy holds it: "1.0" → [1]; none when not a number."""
    text = version[:-2] if version.endswith(".0") else version
    return [int(text)] if text.isdigit() else []
