"""The clients and tools TorchServe, Triton and KServe users already have, run for real.

They live in ``.venv-clients`` (``bash scripts/setup.sh --tests``): tritonclient 2.51.0 with Triton's
perf_analyzer binary, the KServe SDK, and TorchServe's ``ts`` package alone. Archives are made with
the real ``torch-model-archiver`` from launchkit's environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
CLIENTS = ROOT / ".venv-clients"
ARCHIVER = Path(sys.executable).parent / "torch-model-archiver"


def clients_python() -> Path:
    python = CLIENTS / "bin" / "python"
    assert python.exists(), "the test clients are missing: run bash scripts/setup.sh --tests"
    return python


def run_client(script: str, timeout: float = 120.0, **values: object) -> dict:
    """Run ``script`` (Python, in .venv-clients) with ``values`` as JSON on stdin; it prints one JSON line."""
    result = subprocess.run([str(clients_python()), "-c", textwrap.dedent(script)], input=json.dumps(values),
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def perf_analyzer(args: list[str], timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    binary = CLIENTS / "bin" / "perf_analyzer"
    assert binary.exists(), "perf_analyzer is missing: run bash scripts/setup.sh --tests"
    cudart = next(CLIENTS.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
    env = {**os.environ, "LD_LIBRARY_PATH": f"{cudart}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=timeout, env=env)


def ts_only() -> Path:
    """A folder holding TorchServe's ``ts`` package and nothing else (for PYTHONPATH)."""
    folder = CLIENTS / "ts-only"
    assert (folder / "ts" / "torch_handler" / "base_handler.py").exists(), "run bash scripts/setup.sh --tests"
    return folder


def archive(tmp: Path, name: str, *args: str, version: str = "1.0") -> Path:
    """``torch-model-archiver --model-name NAME --version V ARGS --export-path tmp``."""
    assert ARCHIVER.exists(), "torch-model-archiver is missing from .venv: run bash scripts/setup.sh"
    result = subprocess.run([str(ARCHIVER), "--model-name", name, "--version", version, *args, "--export-path",
                             str(tmp), "--force"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return tmp / f"{name}.mar"


@pytest.fixture()
def half_plus_two(tmp_path) -> Path:
    """TF Serving's half_plus_two as a torch.nn model, archived with the default base_handler."""
    import torch

    source = tmp_path / "half_plus_two.py"
    source.write_text(textwrap.dedent("""
        import torch

        class HalfPlusTwo(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.scale = torch.nn.Parameter(torch.tensor(0.5))
                self.offset = torch.nn.Parameter(torch.tensor(2.0))

            def forward(self, x):
                return x * self.scale + self.offset
    """))
    weights = tmp_path / "half_plus_two.pth"
    torch.save({"scale": torch.tensor(0.5), "offset": torch.tensor(2.0)}, weights)
    return archive(tmp_path, "half_plus_two", "--model-file", str(source), "--serialized-file", str(weights),
                   "--handler", "base_handler")
