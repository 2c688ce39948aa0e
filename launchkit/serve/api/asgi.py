"""The ASGI types the apps of this package speak, defined once (uvicorn calls the apps with them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# reads a request's body given its declared Content-Length (the inference app's, with its limits)
BodyReader = Callable[[bytes, Receive], Awaitable[bytes]]
