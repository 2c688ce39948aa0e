"""Free ports for servers this machine starts: picked where the kernel never puts a client.

A port found by binding port 0 comes from the kernel's ephemeral range, the same range it draws
every outgoing connection's local port from. Between the probe closing it and the server binding
it, any client on the machine (a load generator, a worker's connection, a test's request) may be
handed that port, and the server then fails with "Address already in use": CI saw exactly that.
Ports below the ephemeral range are only ever taken by an explicit bind, so a port that binds now
stays free unless another server asks for that very number. A per-process cursor with a random
start keeps two calls (and two processes) from picking the same numbers.
"""

from __future__ import annotations

import itertools
import random
import socket
from collections.abc import Iterator
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Linux's default ephemeral range; where the file cannot be read.
DEFAULT_EPHEMERAL = (32768, 60999)
# Below this, ports are well known or commonly taken by services (databases, proxies, our own 8080).
LOWEST_PORT = 10_000
# Fewer candidates than this outside the ephemeral range: ask the kernel instead.
ENOUGH_CANDIDATES = 1_000


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's range for clients' local ports (both ends included)."""
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL
    return low, high


def candidate_ports(ephemeral: tuple[int, int]) -> range | None:
    """Where to look for a server's port: the larger stretch outside ``ephemeral``, None if too small."""
    below = range(LOWEST_PORT, ephemeral[0])
    above = range(ephemeral[1] + 1, 65536)
    wider = max(below, above, key=len)
    return wider if len(wider) >= ENOUGH_CANDIDATES else None


def _cursor(candidates: range) -> Iterator[int]:
    start = random.randrange(len(candidates))
    return (candidates[(start + step) % len(candidates)] for step in itertools.count())


_CURSORS: dict[range, Iterator[int]] = {}


def _binds(port: int, host: str) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _kernel_ports(count: int, host: str) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that bind on ``host`` now, outside the ephemeral range where possible."""
    candidates = candidate_ports(ephemeral_range())
    if candidates is None:
        return _kernel_ports(count, host)
    cursor = _CURSORS.setdefault(candidates, _cursor(candidates))
    found: list[int] = []
    for port in itertools.islice(cursor, len(candidates)):
        if _binds(port, host):
            found.append(port)
            if len(found) == count:
                return found
    return found + _kernel_ports(count - len(found), host)


def free_port(host: str = "127.0.0.1") -> int:
    """One free port (see :func:`free_ports`)."""
    return free_ports(1, host)[0]
