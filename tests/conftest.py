from __future__ import annotations

from pathlib import Path

import pytest

from launchkit.core.topology import Topology, read_topology

MACHINES = Path(__file__).parent / "fixtures" / "machines"


def machine_root(name: str) -> Path:
    path = MACHINES / name
    assert path.is_dir(), f"missing fixture {path}; run python tests/fixtures/build_machines.py"
    return path


@pytest.fixture
def machine():
    """``machine("xeon-2s-28c-split")`` -> the recorded Topology."""

    def load(name: str) -> Topology:
        return read_topology(machine_root(name))

    return load
