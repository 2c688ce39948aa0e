"""The HTTP edge of the error tree, and the one way the APIs send JSON.

An error raised anywhere while a request is handled becomes a status, TorchServe's error type
and headers here (:func:`http_error`), and then a body in the shape of the API that answers:
TorchServe's ``{"code", "type", "message"}`` (``/predictions``, management, metrics) or KServe's
``{"error": message}`` (``/v2``, ``/v1``).
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from launchkit.core.errors import (
    BadRequest, Conflict, Forbidden, LaunchkitError, MethodNotAllowed, ModelNotFound, NotFound, RequestTimeout, SourceMissing,
    SourceRefused, TooLarge, Unauthorized, Unavailable, UsageError, VersionNotFound,
)
from launchkit.serve.wire import error_body

Headers = tuple[tuple[bytes, bytes], ...]
RETRY_AFTER_S = b"1"

# Most specific first: the first class an error is an instance of decides.
_STATUSES: tuple[tuple[type[LaunchkitError], int, str], ...] = (
    (Unauthorized, 401, "UnauthorizedException"),
    (Forbidden, 403, "ForbiddenException"),
    (VersionNotFound, 404, "ModelVersionNotFoundException"),
    (ModelNotFound, 404, "ModelNotFoundException"),
    (NotFound, 404, "ResourceNotFoundException"),
    (MethodNotAllowed, 405, "MethodNotAllowedException"),
    (RequestTimeout, 408, "RequestTimeoutException"),
    (Conflict, 409, "ConflictStatusException"),
    (TooLarge, 413, "RequestEntityTooLargeException"),
    (Unavailable, 503, "ServiceUnavailableException"),
    (SourceRefused, 403, "ForbiddenException"),
    (SourceMissing, 404, "BadRequestException"),
    (UsageError, 400, "BadRequestException"),  # bad parameters, archives, plans, specs
    (BadRequest, 400, "BadRequestException"),
    (LaunchkitError, 500, "InternalServerException"),
)


def http_error(error: LaunchkitError) -> tuple[int, str, Headers]:
    """(status, TorchServe's error type, extra headers) for an error raised while answering."""
    status, kind = next((status, kind) for cls, status, kind in _STATUSES if isinstance(error, cls))
    headers: Headers = ()
    if isinstance(error, Unauthorized):
        headers = ((b"www-authenticate", f'Bearer realm="launchkit-{error.api}"'.encode()),)
    elif isinstance(error, MethodNotAllowed):
        headers = ((b"allow", error.allowed.encode()),)
    elif isinstance(error, Unavailable):
        headers = ((b"retry-after", RETRY_AFTER_S),)
    return status, kind, headers


def torchserve_error(error: LaunchkitError) -> tuple[int, bytes, Headers]:
    status, kind, headers = http_error(error)
    return status, error_body(status, kind, str(error)), headers


def kserve_error(error: LaunchkitError) -> tuple[int, bytes, Headers]:
    status, _kind, headers = http_error(error)
    return status, json.dumps({"error": str(error)}).encode(), headers


async def send_json(send: Any, status: int, payload: Any, request_id: str | None = None,
                    headers: Headers = ()) -> None:
    """A JSON response (``payload``: bytes already encoded, or anything json can encode) with a
    content-length (HTTP/1.0 keep-alive clients such as ab -k need it)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    await send_bytes(send, status, body, "application/json", request_id, headers)


def bearer_token_ok(scope: dict[str, Any], token: str) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>`` (compared in constant time)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, given = value.decode("latin-1").partition(" ")
            return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
    return False


async def send_bytes(send: Any, status: int, body: bytes, content_type: str, request_id: str | None = None,
                     headers: Headers = ()) -> None:
    all_headers = [(b"content-type", content_type.encode("latin-1")), (b"content-length", str(len(body)).encode()),
                   *headers]
    if request_id is not None:
        all_headers.append((b"x-request-id", request_id.encode()))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})
