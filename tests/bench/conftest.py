from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve.conftest import free_port

SERVER = Path(__file__).parent.parent / "fixtures" / "status_server.py"


@pytest.fixture
def status_server():
    """Base URL of a fresh status server (its request counter starts at 0); killed by pid after."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(SERVER), str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def body(tmp_path) -> str:
    """A request body file for URL targets (bench needs --input for them)."""
    path = tmp_path / "body.json"
    path.write_text('{"x": 1}')
    return str(path)
