"""Servers' ports are picked outside the kernel's range for clients' ports.

CI once failed with "Address already in use": a port found by binding port 0 was handed, before the
server bound it, to some client's outgoing connection (both come from the ephemeral range).
"""

from __future__ import annotations

import socket

from launchkit.core.ports import (
    DEFAULT_EPHEMERAL,
    LOWEST_PORT,
    candidate_ports,
    ephemeral_range,
    free_ports,
)


def test_the_ephemeral_range_is_read_from_the_kernel_or_defaults(tmp_path):
    recorded = tmp_path / "ip_local_port_range"
    recorded.write_text("40000\t50000\n")
    assert ephemeral_range(recorded) == (40000, 50000)
    assert ephemeral_range(tmp_path / "missing") == DEFAULT_EPHEMERAL
    recorded.write_text("garbage\n")
    assert ephemeral_range(recorded) == DEFAULT_EPHEMERAL


def test_candidates_are_the_wider_stretch_outside_the_ephemeral_range():
    assert candidate_ports((32768, 60999)) == range(LOWEST_PORT, 32768)
    assert candidate_ports((10500, 50000)) == range(50001, 65536)  # below holds only 500
    assert candidate_ports((1024, 65000)) is None  # neither side holds enough: the kernel picks


def test_free_ports_are_distinct_bindable_and_never_ephemeral():
    low, high = ephemeral_range()
    ports = free_ports(50)
    assert len(set(ports)) == 50
    if candidate_ports((low, high)) is not None:
        assert all(not low <= port <= high for port in ports)
    again = free_ports(50)
    assert not set(ports) & set(again)  # the cursor moves on: two calls in a row do not hand out the same ports
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_without_room_outside_the_ephemeral_range_the_kernel_picks(monkeypatch):
    import launchkit.core.ports as ports

    monkeypatch.setattr(ports, "ephemeral_range", lambda: (1024, 65000))
    picked = ports.free_ports(3)
    assert len(set(picked)) == 3 and all(1024 <= port <= 65535 for port in picked)
