"""What one client, one request or one archive may cost `launchkit serve`, and the config.properties
keys that set it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from launchkit.archive.reading import ExtractionLimits
from launchkit.core.errors import UsageError


@dataclass(frozen=True)
class Limits:
    """What one client, one request or one archive may cost the server (config.properties keys in brackets).

    The defaults let every legitimate use through (multi-GB weights, big image batches) and stop the
    attacks a security review reproduced: a 64 MB header, a client that drips bytes or never sends,
    an 85-byte tensor shape worth 586 MB, a 1 MB archive that unpacks to 1 GiB.
    """

    max_header_bytes: int = 65536  # [max_header_size] request line and headers together
    max_headers: int = 100  # [max_headers]
    header_timeout_s: float = 10.0  # [header_timeout] from the connection (or the last answer) to a full head
    body_timeout_s: float = 60.0  # [body_timeout] from the head to the end of the body
    keep_alive_timeout_s: float = 60.0  # [keep_alive_timeout] an idle connection between requests
    max_connections: int = 4096  # [max_connections] per listener; more are answered 503 and closed
    max_tensor_elements: int = 16 * 2**20  # [max_tensor_elements] values in one KServe infer request
    max_archive_bytes: int = 64 * 2**30  # [max_archive_size] uncompressed, all entries of one .mar
    max_archive_entries: int = 10_000  # [max_archive_entries]
    max_archive_ratio: float = 200.0  # [max_archive_ratio] uncompressed ÷ compressed, entries over 1 MiB

    def extraction(self) -> ExtractionLimits:
        return ExtractionLimits(self.max_archive_bytes, self.max_archive_entries, self.max_archive_ratio)


_LIMIT_KEYS = {  # config.properties key: (Limits attribute, type)
    "max_header_size": ("max_header_bytes", int), "max_headers": ("max_headers", int),
    "header_timeout": ("header_timeout_s", float), "body_timeout": ("body_timeout_s", float),
    "keep_alive_timeout": ("keep_alive_timeout_s", float), "max_connections": ("max_connections", int),
    "max_tensor_elements": ("max_tensor_elements", int), "max_archive_size": ("max_archive_bytes", int),
    "max_archive_entries": ("max_archive_entries", int), "max_archive_ratio": ("max_archive_ratio", float),
}


def parse_limits(entries: dict[str, str], source: str) -> Limits:
    """The limits config.properties sets (positive numbers), the defaults for the rest."""
    changes: dict[str, Any] = {}
    for key, (attribute, kind) in _LIMIT_KEYS.items():
        if key in entries:
            try:
                value = kind(entries[key])
            except ValueError:
                raise UsageError(f"{source}: {key}={entries[key]!r} is not a number") from None
            if value <= 0:
                raise UsageError(f"{source}: {key}={entries[key]} must be positive")
            changes[attribute] = value
    return replace(Limits(), **changes)
