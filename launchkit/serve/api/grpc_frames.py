"""The wire between the frontend and its gRPC relay processes: small binary frames, both ends of it.

A frame is a 9-byte header (payload length: 4 bytes, kind: 1, call id: 4; little-endian) and its
payload. No pickle: the frontend listens for relays on a Unix socket (in its own 0700 folder), so
what arrives there is parsed, never unpickled.

  relay → frontend  HELLO      (call 0) the relay's pid; the frontend answers SETUP
                    READY      (call 0) listening on every address; FAILED (call 0): why not
                    CALL       a call started: method path, the caller's authorization, its first message
                               (none for a stream of requests, whose messages follow as MESSAGE frames)
                    MESSAGE    one request message of a stream; HALF_CLOSE: the caller's stream ended
                    CANCEL     the caller went away (cancelled, deadline): stop working on it
  frontend → relay  SETUP      (call 0) JSON: addresses, methods and their shapes, message limits
                    ANSWER     a unary call's answer (the one frame a successful unary call gets)
                    MESSAGE    one answer message of a stream; END: the call's status code and details
                    STOP       (call 0) stop accepting, let calls in flight finish within the grace given
"""

from __future__ import annotations

import asyncio
import struct
from enum import IntEnum
from typing import NamedTuple

HEADER = struct.Struct("<IBI")
TWO_LENGTHS = struct.Struct("<HH")
CODE = struct.Struct("<H")
GRACE = struct.Struct("<d")
MAX_PAYLOAD = 1 << 31  # gRPC's own message limit is below this (max_request_size / max_response_size)


class Kind(IntEnum):
    HELLO = 1
    SETUP = 2
    READY = 3
    FAILED = 4
    CALL = 5
    MESSAGE = 6
    HALF_CLOSE = 7
    CANCEL = 8
    ANSWER = 9
    END = 10
    STOP = 11


class Frame(NamedTuple):
    kind: Kind
    call: int
    payload: bytes


class Call(NamedTuple):
    """A CALL frame's payload: which method, the caller's ``authorization`` metadata, the first message."""

    method: str
    authorization: str
    message: bytes | None  # None: the requests come as a stream


def frame(kind: Kind, call: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(len(payload), kind, call) + payload


def call_frame(call: int, method: str, authorization: str, message: bytes | None) -> bytes:
    method_bytes, auth_bytes = method.encode(), authorization.encode()
    streamed = b"\x00" if message is None else b"\x01"
    payload = TWO_LENGTHS.pack(len(method_bytes), len(auth_bytes)) + method_bytes + auth_bytes + streamed
    return frame(Kind.CALL, call, payload + (message or b""))


def parse_call(payload: bytes) -> Call:
    method_length, auth_length = TWO_LENGTHS.unpack_from(payload)
    start = TWO_LENGTHS.size
    method = payload[start:start + method_length].decode()
    start += method_length
    authorization = payload[start:start + auth_length].decode()
    start += auth_length
    has_message = payload[start:start + 1] == b"\x01"
    return Call(method, authorization, payload[start + 1:] if has_message else None)


def end_frame(call: int, code: int, details: str = "") -> bytes:
    return frame(Kind.END, call, CODE.pack(code) + details.encode())


def parse_end(payload: bytes) -> tuple[int, str]:
    (code,) = CODE.unpack_from(payload)
    return code, payload[CODE.size:].decode(errors="replace")


class FrameReader:
    """Frames out of a byte stream, however it is cut into pieces."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        start = 0
        while len(buffer) - start >= HEADER.size:
            length, kind, call = HEADER.unpack_from(buffer, start)
            end = start + HEADER.size + length
            if length > MAX_PAYLOAD:
                raise ValueError(f"a frame of {length} bytes: the other end does not speak this wire")
            if len(buffer) < end:
                break
            frames.append(Frame(Kind(kind), call, bytes(buffer[start + HEADER.size:end])))
            start = end
        if start:
            del buffer[:start]
        return frames


class FrameWriter:
    """Frames to a transport, those of one turn of the event loop in one write.

    Under load many calls start or end in the same turn of the loop: one system call for all of them
    instead of one each (each is a wake-up of the other process, too)."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._pending: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def send(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        """Write what waits now (the loop's turn does it anyway: for a process about to exit)."""
        if not self._pending:
            return
        data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending.clear()
        if not self.transport.is_closing():
            self.transport.write(data)
