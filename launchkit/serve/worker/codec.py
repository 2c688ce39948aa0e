"""Request bodies → what a handler sees, and a handler's outputs → response bodies, TorchServe's way."""

from __future__ import annotations

import json
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs

from launchkit.core.errors import BadRequest
from launchkit.serve.wire import ItemRequest


def decode_item(item: ItemRequest) -> dict[str, Any]:
    """TorchServe's decoding: JSON → objects, text → str, multipart/urlencoded → fields, else bytes."""
    content_type = item.content_type.split(";")[0].strip().lower()
    body = item.body
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
        message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + item.content_type.encode() + b"\r\n\r\n" + body)
        if not message.is_multipart():
            raise BadRequest("multipart body could not be parsed (boundary missing?)")
        fields: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name:
                fields[name] = part.get_payload(decode=True)
        if not fields:
            raise BadRequest("multipart body has no named fields")
        return fields
    if content_type == "application/x-www-form-urlencoded":
        # curl -d and urllib label any body this way; a body that is not a form is passed on raw.
        try:
            fields = parse_qs(body.decode(), strict_parsing=True)
            return {key: values[0] for key, values in fields.items()}
        except (ValueError, UnicodeDecodeError):
            pass
    return {"body": body}


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
