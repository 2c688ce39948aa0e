"""What the load generator sends: the target, the payloads, each request encoded once as bytes. Pure code.

Requests are encoded before a run starts so that sending one is a single write of ready bytes (the
client must cost less CPU than the server it measures)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str
    method: str = "POST"

    @classmethod
    def from_url(cls, url: str, method: str = "POST") -> Target:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{url!r}: expected an http:// URL such as http://127.0.0.1:8080/predictions/tiny")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.hostname, parts.port or 80, path, method)


@dataclass(frozen=True)
class Payload:
    body: bytes
    content_type: str


def encode_requests(target: Target, payloads: list[Payload], headers: tuple[tuple[str, str], ...] = (),
                    keep_alive: bool = True) -> list[bytes]:
    """Each payload as one request's bytes. ``headers`` are sent on every request and replace the
    defaults of the same name (Host, Content-Type, Connection); with no payload the request has no
    body (GET, DELETE), and no Content-Type or Content-Length either."""
    given = {name.lower() for name, _ in headers}
    defaults = [("Host", f"{target.host}:{target.port}"), ("Connection", "keep-alive" if keep_alive else "close")]
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
    encoded = []
    for payload in payloads or (None,):
        fields = [(name, value) for name, value in defaults if name.lower() not in given]
        if payload is not None:
            if "content-type" not in given:
                fields.append(("Content-Type", payload.content_type))
            fields.append(("Content-Length", str(len(payload.body))))
        head = (f"{target.method} {target.path} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields)
                + extra + "\r\n").encode("latin-1")
        encoded.append(head + (payload.body if payload is not None else b""))
    return encoded
