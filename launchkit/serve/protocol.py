"""Frames between the frontend and its workers, over a Unix socket.

A frame is a 4-byte big-endian length and a pickle (protocol 5) of a tuple. Pickle is safe here:
both ends are our own processes and the socket lives in a 0700 directory of the server's. It is
also the cheapest encoding of a batch of raw request bodies (no copies of the bytes, no base64).

Messages:
  worker → frontend  ("ready", worker_id, pid, info)   model loaded; info: dict (optimization path, ...)
                     ("failed", worker_id, pid, message) model could not be loaded
                     ("result", batch_id, [ItemResult...], timings) one result per request of the
                                                        batch, in order; timings: handler seconds by stage
  frontend → worker  ("batch", batch_id, [ItemRequest...])
                     ("stop",)
"""

from __future__ import annotations

import pickle
import socket
import struct
from typing import Any, NamedTuple

HEADER = struct.Struct("!I")
MAX_FRAME = 1 << 31


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


def encode(message: tuple[Any, ...]) -> bytes:
    payload = pickle.dumps(message, protocol=5)
    return HEADER.pack(len(payload)) + payload


def decode(payload: bytes) -> tuple[Any, ...]:
    return pickle.loads(payload)


class BlockingChannel:
    """The worker's end: blocking reads and writes of whole frames."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, message: tuple[Any, ...]) -> None:
        self.sock.sendall(encode(message))

    def receive(self) -> tuple[Any, ...] | None:
        header = self._exactly(HEADER.size)
        if header is None:
            return None
        (length,) = HEADER.unpack(header)
        payload = self._exactly(length)
        return None if payload is None else decode(payload)

    def _exactly(self, count: int) -> bytes | None:
        buffer = bytearray(count)
        view = memoryview(buffer)
        received = 0
        while received < count:
            got = self.sock.recv_into(view[received:])
            if got == 0:
                return None
            received += got
        return bytes(buffer)
