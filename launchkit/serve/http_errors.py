"""Error responses in TorchServe's shape: ``{"code", "type", "message"}``."""

from __future__ import annotations

import json

from launchkit.serve.protocol import ItemResult


def error_body(status: int, kind: str, message: str) -> bytes:
    return json.dumps({"code": status, "type": kind, "message": message}).encode()


def error_result(status: int, kind: str, message: str) -> ItemResult:
    return ItemResult(status, "application/json", error_body(status, kind, message), [])
