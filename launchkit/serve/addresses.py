"""Listening addresses of `launchkit serve`: parsed from flags and config.properties, and whether
one is reachable only from this machine (loopback), which decides what needs a token."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlparse

from launchkit.core.errors import UsageError


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"http://{self.host}:{self.port}"


def parse_address(value: str, key: str) -> Address:
    try:
        url = urlparse(value if "://" in value else f"http://{value}")
    except ValueError as error:  # "http://[::1" (an unclosed IPv6 bracket)
        raise UsageError(f"{key}={value}: not an address ({error}); e.g. http://127.0.0.1:8080 or "
                         "http://[::1]:8080") from None
    if url.scheme != "http":
        raise UsageError(f"{key}={value}: only http:// addresses are supported (TLS is not built in; put a proxy in front)")
    try:
        port = url.port
    except ValueError:
        port = None
    if port is None:
        raise UsageError(f"{key}={value}: give a port, e.g. http://127.0.0.1:8080")
    return Address(url.hostname or "127.0.0.1", port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
