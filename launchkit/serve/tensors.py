"""Open Inference Protocol tensors on both sides of the wire: datatypes, the binary tensor data
extension's byte layouts, declared tensor metadata, and the row format the frontend hands workers.

Pure functions over bytes and lists: the frontend splits a binary tensor into rows by byte
offsets (no numpy, no per-value work); the worker turns a row's bytes into a tensor without
copying them (:func:`launchkit.serve.worker.codec.decode_row`).

Row format (frontend → worker, content type :data:`ROWS_CONTENT_TYPE`): a JSON header line, a
newline, then the raw bytes of every binary input of the row, in header order::

    [{"name": "input0", "datatype": "FP32", "shape": [64], "size": 256}, {"name": "ids", ..., "data": [...]}]\\n<256 bytes>

An input that arrived as JSON in a binary request carries its row in ``data`` instead of ``size``.
The header line is padded with spaces and each buffer with zeros to a multiple of 8 bytes, so every
tensor made over a buffer is aligned.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from launchkit.core.errors import ArchiveError, BadRequest

ROWS_CONTENT_TYPE = "application/x-launchkit-tensor-rows"
LENGTH = struct.Struct("<I")  # BYTES elements: a 4-byte little-endian length, then the bytes


@dataclass(frozen=True)
class DataType:
    name: str
    size: int  # bytes per element; 0 for BYTES (each element carries its own length)
    code: str  # struct format character

    @property
    def triton(self) -> str:
        """Triton's model-configuration spelling: ``TYPE_FP32``, ``TYPE_STRING`` for BYTES."""
        return "TYPE_STRING" if self.name == "BYTES" else f"TYPE_{self.name}"


DATATYPES: dict[str, DataType] = {dt.name: dt for dt in (
    DataType("BOOL", 1, "?"), DataType("UINT8", 1, "B"), DataType("UINT16", 2, "H"), DataType("UINT32", 4, "I"),
    DataType("UINT64", 8, "Q"), DataType("INT8", 1, "b"), DataType("INT16", 2, "h"), DataType("INT32", 4, "i"),
    DataType("INT64", 8, "q"), DataType("FP16", 2, "e"), DataType("FP32", 4, "f"), DataType("FP64", 8, "d"),
    DataType("BYTES", 0, ""),
)}


def datatype(name: Any, where: str) -> DataType:
    found = DATATYPES.get(name) if isinstance(name, str) else None
    if found is None:
        raise BadRequest(f"{where}: datatype {name!r} is not one of {', '.join(DATATYPES)}")
    return found


# -- declared metadata ---------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a model's signature; ``shape`` starts with the batch dimension, -1."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ModelTensors:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    source: str  # "model-config.yaml" or "learned from the first successful request"


def declared_tensors(config: dict[str, Any], archive: str) -> ModelTensors | None:
    """The ``inputs``/``outputs`` an archive's model-config.yaml declares (None when it declares none).

    Each entry is ``{name, datatype, shape}`` with the shape of one row (``dims`` and
    ``data_type: TYPE_FP32``, Triton's spellings, are accepted too); -1 marks a variable size."""
    if "inputs" not in config and "outputs" not in config:
        return None
    sides = []
    for key in ("inputs", "outputs"):
        entries = config.get(key) or []
        if not isinstance(entries, list):
            raise ArchiveError(f"{archive}: {key} in model-config.yaml must be a list of {{name, datatype, shape}}")
        sides.append(tuple(_declared(entry, f"{archive}: {key}[{index}] in model-config.yaml")
                           for index, entry in enumerate(entries)))
    return ModelTensors(sides[0], sides[1], "model-config.yaml")


def _declared(entry: Any, where: str) -> TensorSpec:
    if not isinstance(entry, dict):
        raise ArchiveError(f"{where}: expected {{name, datatype, shape}}, got {str(entry)[:80]}")
    name = entry.get("name")
    kind = entry.get("datatype", entry.get("data_type"))
    if isinstance(kind, str) and kind.startswith("TYPE_"):
        kind = "BYTES" if kind == "TYPE_STRING" else kind[len("TYPE_"):]
    shape = entry.get("shape", entry.get("dims"))
    if not isinstance(name, str) or not name:
        raise ArchiveError(f"{where}: name is missing")
    if kind not in DATATYPES:
        raise ArchiveError(f"{where}: datatype {kind!r} is not one of {', '.join(DATATYPES)}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and (d >= 1 or d == -1)
                                              for d in shape):
        raise ArchiveError(f"{where}: shape must be the list of one row's dimensions (-1 for a variable one), "
                           f"got {shape!r}")
    return TensorSpec(name, kind, (-1, *shape))


# -- the binary tensor data extension ------------------------------------------------------------

def split_binary(raw: memoryview, kind: DataType, shape: list[int], where: str) -> list[memoryview]:
    """One slice per row of a tensor's binary data, checked against datatype × shape."""
    rows, per_row = shape[0], math.prod(shape[1:])
    if kind.size:
        expected = rows * per_row * kind.size
        if len(raw) != expected:
            raise BadRequest(f"{where}: {kind.name} shape {shape} needs {expected} bytes of binary data, "
                             f"binary_data_size says {len(raw)}")
        step = per_row * kind.size
        return [raw[row * step:(row + 1) * step] for row in range(rows)]
    bounds = [0]
    offset, count = 0, 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadRequest(f"{where}: BYTES element {count} has a truncated 4-byte length")
        (length,) = LENGTH.unpack_from(raw, offset)
        offset += 4 + length
        if offset > len(raw):
            raise BadRequest(f"{where}: BYTES element {count} claims {length} bytes, past the end of its data")
        count += 1
        if count % per_row == 0:
            bounds.append(offset)
    if count != rows * per_row:
        raise BadRequest(f"{where}: shape {shape} holds {rows * per_row} BYTES elements but the data has {count}")
    return [raw[bounds[row]:bounds[row + 1]] for row in range(rows)]


def bytes_elements(raw: bytes | memoryview) -> list[bytes]:
    """The elements of BYTES binary data (already checked by :func:`split_binary`)."""
    elements, offset = [], 0
    while offset < len(raw):
        (length,) = LENGTH.unpack_from(raw, offset)
        elements.append(bytes(raw[offset + 4:offset + 4 + length]))
        offset += 4 + length
    return elements


def pack_bytes(elements: list[bytes]) -> bytes:
    return b"".join(LENGTH.pack(len(element)) + element for element in elements)


def pack_values(kind: DataType, flat: list[Any]) -> bytes:
    """Little-endian binary data of numbers (or, for BYTES, of str/bytes elements)."""
    if not kind.size:
        return pack_bytes([value if isinstance(value, bytes) else str(value).encode() for value in flat])
    return struct.pack(f"<{len(flat)}{kind.code}", *flat)


def nest(flat: list[Any], shape: list[int] | tuple[int, ...]) -> Any:
    """A flat list as nested lists of ``shape`` (a scalar for shape [])."""
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return flat
    step = math.prod(shape[1:])
    return [nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


# -- rows for the worker -------------------------------------------------------------------------

def encode_row(header: list[dict[str, Any]], buffers: Sequence[bytes | memoryview]) -> bytes:
    """Header and buffers, each buffer starting at a multiple of 8 bytes (tensors are made over them)."""
    line = json.dumps(header, separators=(",", ":")).encode()
    parts: list[bytes | memoryview] = [line, b" " * (-(len(line) + 1) % 8), b"\n"]
    for buffer in buffers:
        parts += [buffer, b"\0" * (-len(buffer) % 8)]
    return b"".join(parts)
