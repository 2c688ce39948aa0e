"""Error responses in TorchServe's shape (``{"code", "type", "message"}``), JSON replies, token checks."""

from __future__ import annotations

import hmac
import json
from typing import Any

from launchkit.serve.protocol import ItemResult


def error_body(status: int, kind: str, message: str) -> bytes:
    return json.dumps({"code": status, "type": kind, "message": message}).encode()


def error_result(status: int, kind: str, message: str) -> ItemResult:
    return ItemResult(status, "application/json", error_body(status, kind, message), [])


class HttpError(Exception):
    """An error answer: raised anywhere in a request's handling, sent as TorchServe's JSON shape."""

    def __init__(self, status: int, kind: str, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = headers

    def body(self) -> bytes:
        return error_body(self.status, self.kind, self.message)


async def send_json(send: Any, status: int, payload: Any, request_id: str | None = None,
                    headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    all_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    if request_id is not None:
        all_headers.append((b"x-request-id", request_id.encode()))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


def bearer_token_ok(scope: dict[str, Any], token: str) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>`` (compared in constant time)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, given = value.decode("latin-1").partition(" ")
            return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
    return False


def unauthorized(api: str) -> HttpError:
    return HttpError(401, "UnauthorizedException",
                     f"the {api} API needs a token: send 'Authorization: Bearer <token>' with the token the server was "
                     f"started with ({api}_token in config.properties or LAUNCHKIT_{api.upper()}_TOKEN)",
                     ((b"www-authenticate", f'Bearer realm="launchkit-{api}"'.encode()),))
