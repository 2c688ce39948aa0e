"""User errors in every command: one clear line, exit status 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent.parent


def launchkit(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launchkit", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


@pytest.fixture(scope="module")
def odd(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("odd")
    corrupt = folder / "random.mar"
    corrupt.write_bytes(os.urandom(3000))
    a_file = folder / "a-file"
    a_file.write_text("x")
    bad_json = folder / "bad.json"
    bad_json.write_text("{not json")
    return {"corrupt": str(corrupt), "file": str(a_file), "folder": str(folder), "bad_json": str(bad_json)}


CASES = [
    # command line, what the message must say
    (["info", "--topology-root", "/nonexistent"], "does not look like a system root"),
    (["run", "--log-path", "/proc/nope", "--no-python", "true"], "cannot write there"),
    (["run", "--log-path", "{file}", "--no-python", "true"], "this is a file"),
    (["run", "--core-list", "0-3,x", "--no-python", "true"], "is not a number"),
    (["archive", "--model-name", "m", "-v", "1", "--handler", "h.py", "--export-path", "/proc/nope"], "no such"),
    (["archive", "--example", "tiny", "--export-path", "/proc"], "/proc"),
    (["serve", "{corrupt}"], "not a zip file"),
    (["serve", "--ts-config", "{folder}"], "--ts-config"),
    (["serve", "--inference-address", "http://127.0.0.1:notaport"], "give a port"),
    (["bench", "{corrupt}", "-i", "{file}"], "not a zip file"),
    (["bench", "--report-dir", "/proc/nope"], "cannot write there"),
    (["optimize", "{corrupt}"], "not a zip file"),
    (["optimize", "--example", "tiny", "--dtype", "fp32", "--output", "/proc/nope/x.mar"], "cannot write there"),
    (["optimize", "--example", "tiny", "--dtype", "fp32", "--report-dir", "{file}"], "this is a file"),
    (["optimize", "--example", "tiny", "--dtype", "fp32", "--batch-sizes", "8,a"], "--batch-sizes"),
    (["report", "compare", "{bad_json}", "{bad_json}"], "not valid JSON"),
    (["report", "compare", "{folder}", "{folder}"], "summary.json"),
]


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(case[0][:2]) + f" #{i}" for i, case in enumerate(CASES)])
def test_user_errors_are_one_line_and_exit_2(odd, tmp_path, args, message):
    result = launchkit(*[arg.format(**odd) for arg in args], cwd=str(tmp_path))
    assert result.returncode == 2, (result.returncode, result.stderr[-1500:])
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr[-1500:]
    assert result.stderr.strip().count("\n") <= 3, result.stderr  # one line (plus a note or two at most)


def test_archive_example_does_not_overwrite_without_force(tmp_path):
    assert launchkit("archive", "--example", "tiny", "--export-path", str(tmp_path)).returncode == 0
    (tmp_path / "tiny.mar").write_bytes(b"someone else's tiny.mar")
    again = launchkit("archive", "--example", "tiny", "--export-path", str(tmp_path))
    assert again.returncode == 2 and "-f/--force" in again.stderr
    assert (tmp_path / "tiny.mar").read_bytes() == b"someone else's tiny.mar"
    assert launchkit("archive", "--example", "tiny", "--export-path", str(tmp_path), "-f").returncode == 0
    assert (tmp_path / "tiny.mar").read_bytes()[:2] == b"PK"


def test_archive_handler_file_and_function_packs_the_file(tmp_path):
    import zipfile

    handler = ROOT / "tests" / "fixtures" / "handlers" / "function_handler.py"
    result = launchkit("archive", "--model-name", "fn", "-v", "1.0", "--handler", f"{handler}:handle",
                       "--export-path", str(tmp_path), cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(tmp_path / "fn.mar") as bundle:
        assert "function_handler.py" in bundle.namelist()
        assert '"handler": "function_handler.py:handle"' in bundle.read("MAR-INF/MANIFEST.json").decode()
    # a relative FILE.py:FUNCTION too (the spelling docs/bench.md documents)
    local = tmp_path / "h.py"
    local.write_text(handler.read_text())
    result = launchkit("archive", "--model-name", "fn2", "-v", "1.0", "--handler", "h.py:handle", cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(tmp_path / "fn2.mar") as bundle:
        assert "h.py" in bundle.namelist()
