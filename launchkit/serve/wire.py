"""The wire between the frontend and its workers: frames over a Unix socket, both ends of it.

A frame: a 4-byte big-endian pickle length, a 4-byte count of out-of-band buffers, an 8-byte
length per buffer, the pickle (protocol 5) of a tuple, then the buffers. Pickle is safe here:
each channel is a socketpair the frontend made for one worker process it started, whose end the
worker inherits; nothing listens, so no other process can reach either end.

Request bodies of 64 KiB or more travel out-of-band (pickle's PickleBuffer): the frontend hands
them to one vectored write instead of copying them into the pickle and then again behind the
header. For resnet18 (600 KB float32 bodies), that copying was a third of the frontend's busy
time. In the worker they arrive as bytearrays (TorchServe hands bodies over as bytearrays, too).

Messages (the NamedTuples below; each starts with its kind, so a frame reads as a plain tuple too):
  worker → frontend  Hello("ready", worker_id, pid, info)      model loaded; info: dict (optimization path, ...)
                     Hello("failed", worker_id, pid, message)  model could not be loaded
                     BatchResult("result", batch_id, [ItemResult...], timings, metrics)  one result per
                         request of the batch, in order; timings: handler seconds by stage; metrics:
                         what the handler emitted through context.metrics (worker/metrics_api.py)
  frontend → worker  Batch("batch", batch_id, [ItemRequest...])
                     Stop("stop")
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
import json
from typing import Any, NamedTuple, cast

HEADER = struct.Struct("!II")  # pickle length, number of out-of-band buffers
BUFFER_LENGTH = struct.Struct("!Q")
OUT_OF_BAND = 64 * 1024


class ItemRequest(NamedTuple):
    request_id: str
    body: bytes
    content_type: str
    headers: list[tuple[str, str]]


class ItemResult(NamedTuple):
    status: int
    content_type: str
    body: bytes
    headers: list[tuple[str, str]]


class Hello(NamedTuple):
    """A worker's first message: its model loaded ("ready", detail = info) or not ("failed", detail = why)."""

    kind: str
    worker_id: int
    pid: int
    detail: Any


class BatchResult(NamedTuple):
    kind: str  # "result"
    batch_id: int
    results: list[ItemResult]
    timings: dict[str, float]
    metrics: list[Any]


class Batch(NamedTuple):
    kind: str  # "batch"
    batch_id: int
    items: list[ItemRequest]


class Stop(NamedTuple):
    kind: str = "stop"


LOAD_ATTEMPT_ENV = "LAUNCHKIT_LOAD_ATTEMPT"  # set on a worker: which attempt at loading its model this is


def error_body(status: int, kind: str, message: str) -> bytes:
    """TorchServe's error body: ``{"code", "type", "message"}``."""
    return json.dumps({"code": status, "type": kind, "message": message}).encode()


def error_result(status: int, kind: str, message: str) -> ItemResult:
    """The result of an item that failed (decoding, the handler, a lost worker, a timeout)."""
    return ItemResult(status, "application/json", error_body(status, kind, message), [])


def batch_frame(batch_id: int, requests: list[ItemRequest]) -> list[Any]:
    """A ("batch", ...) frame; bodies of OUT_OF_BAND bytes or more are not copied into the pickle."""
    requests = [request if len(request.body) < OUT_OF_BAND else
                # a PickleBuffer where bytes go: pickle writes it out of band, the worker reads bytes
                request._replace(body=cast(bytes, pickle.PickleBuffer(request.body))) for request in requests]
    return encode(Batch("batch", batch_id, requests))


def encode(message: tuple[Any, ...]) -> list[Any]:
    """The frame as a list of byte-like parts, for one vectored write."""
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    raws = [buffer.raw() for buffer in buffers]
    head = HEADER.pack(len(payload), len(raws)) + b"".join(BUFFER_LENGTH.pack(raw.nbytes) for raw in raws)
    return [head, payload, *raws]


def decode(payload: bytes, buffers: list[Any] = ()) -> tuple[Any, ...]:  # type: ignore[assignment]
    return pickle.loads(payload, buffers=buffers)


async def read_frame(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    """The frontend's end: one whole message, or None when the worker closed the connection."""
    try:
        length, count = HEADER.unpack(await reader.readexactly(HEADER.size))
        lengths = await reader.readexactly(BUFFER_LENGTH.size * count) if count else b""
        payload = await reader.readexactly(length)
        buffers = [await reader.readexactly(BUFFER_LENGTH.unpack_from(lengths, i * BUFFER_LENGTH.size)[0])
                   for i in range(count)]
        return decode(payload, buffers)
    except asyncio.IncompleteReadError:
        return None


class BlockingChannel:
    """The worker's end: blocking reads and writes of whole frames."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, message: tuple[Any, ...]) -> None:
        self.sock.sendall(b"".join(encode(message)))  # worker → frontend frames are small

    def receive(self) -> tuple[Any, ...] | None:
        header = self._exactly(HEADER.size)
        if header is None:
            return None
        length, count = HEADER.unpack(header)
        lengths = self._exactly(BUFFER_LENGTH.size * count) if count else b""
        payload = self._exactly(length)
        if payload is None or lengths is None:
            return None
        buffers = []
        for index in range(count):
            (size,) = BUFFER_LENGTH.unpack_from(lengths, index * BUFFER_LENGTH.size)
            buffer = self._exactly(size)
            if buffer is None:
                return None
            buffers.append(buffer)
        return decode(bytes(payload), buffers)

    def _exactly(self, count: int) -> bytearray | None:
        buffer = bytearray(count)
        view = memoryview(buffer)
        received = 0
        while received < count:
            got = self.sock.recv_into(view[received:])
            if got == 0:
                return None
            received += got
        return buffer
