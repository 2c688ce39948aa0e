"""Trust for CI: bench's exit status tells the truth, nothing outlives it, bad input is found first.

Real processes throughout: `launchkit bench` as a user runs it, the servers it starts, checked by pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.serve.conftest import handler_started, make_archive, wait_for


def launchkit(*args: str, timeout: float = 180, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launchkit", *args], capture_output=True, text=True, timeout=timeout,
                          **kwargs)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def echo(tmp_path_factory) -> Path:
    return make_archive(tmp_path_factory.mktemp("echo"), "echo_handler.py", "echo")


# --- the exit status tells the truth ----------------------------------------------------------------------------


def test_every_request_failing_exits_6_and_shows_why(status_server, body, tmp_path):
    folder = tmp_path / "r"
    result = launchkit("bench", f"{status_server}/bad", "-i", body, "-c", "2", "-r", "50", "--quiet", "-rl", str(folder))
    assert result.returncode == 6, result.stderr
    assert "50 of 50 requests failed (400 ×50)" in result.stderr
    assert 'first 400 answer: {"code": 400, "message": "expected 64 numbers, got 3"}' in result.stderr
    level = json.loads((folder / "summary.json").read_text())["levels"][0]
    assert level["error_rate"] == 1.0 and level["error_bodies"]["400"][0].startswith('{"code": 400')
    assert "## Failed requests" in (folder / "report.md").read_text()


def test_max_error_rate_decides(status_server, body, tmp_path):
    # /mixed fails 20% + 1 in 7 of the rest: about 31%
    args = ("bench", f"{status_server}/mixed", "-i", body, "-c", "2", "-r", "100", "--warmup", "0", "--quiet")
    assert launchkit(*args, "-rl", str(tmp_path / "a"), "--max-error-rate", "40%").returncode == 0
    strict = launchkit(*args, "-rl", str(tmp_path / "b"))
    assert strict.returncode == 6 and "--max-error-rate 0%" in strict.stderr


def test_a_url_target_keeps_its_own_settings(status_server, body):
    result = launchkit("bench", f"{status_server}/ok", "-i", body, "-w", "2", "-bs", "4")
    assert result.returncode == 2 and "-w/--workers, -bs/--batch-size" in result.stderr


def test_an_archive_without_a_declared_input_is_refused_before_any_server_starts(echo, tmp_path):
    started = time.perf_counter()
    result = launchkit("bench", str(echo), "-r", "10", "-rl", str(tmp_path / "r"))
    assert result.returncode == 2 and "declares no sample input" in result.stderr and "--input FILE" in result.stderr
    assert time.perf_counter() - started < 10 and not (tmp_path / "r" / "server.log").exists()


def test_the_bundled_examples_bring_their_own_inputs(tmp_path):
    assert launchkit("archive", "--example", "resnet18", "--export-path", str(tmp_path)).returncode == 0
    result = launchkit("bench", str(tmp_path / "resnet18.mar"), "-r", "6", "--warmup", "1", "--quiet", "-rl",
                       str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["levels"][0]["statuses"] == {"200": 6} and summary["model"] == "resnet18"


# --- nothing outlives bench -------------------------------------------------------------------------------------


def _start_bench(echo: Path, folder: Path, body: str) -> tuple[subprocess.Popen, list[int]]:
    """bench against a .mar for 60 s; returns once its server (and worker) run: (bench, their pids)."""
    marker = Path(body).with_name("started")  # the echo handler appends to it as it handles each request
    own = Path(body).with_name("body-started.json")
    own.write_text(json.dumps({**json.loads(Path(body).read_text()), "started": str(marker)}))
    bench = subprocess.Popen([sys.executable, "-m", "launchkit", "bench", str(echo), "-i", str(own), "-ic",
                              "application/json", "-c", "2", "--duration", "60", "--quiet", "-rl", str(folder)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        log = folder / "server.log"
        if log.exists() and "ready on" in log.read_text():
            break
        time.sleep(0.1)
    else:
        bench.kill()
        raise AssertionError(f"the server bench started never became ready: {bench.communicate()[1][-2000:]}")
    # a level under way: bench's 100 warm-up requests handled, and 20 of the measured level
    wait_for(handler_started(marker, 120), what="a level under way")
    children = [child.pid for child in psutil.Process(bench.pid).children(recursive=True)]
    assert len(children) >= 2, "bench, its server and its worker"
    return bench, children


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_stops_the_server_and_keeps_partial_results(echo, body, tmp_path, signum):
    folder = tmp_path / "r"
    bench, children = _start_bench(echo, folder, body)
    try:
        bench.send_signal(signum)
        _, stderr = bench.communicate(timeout=40)
        assert bench.returncode == 128 + signum, stderr
        assert f"stopped by {signal.Signals(signum).name}" in stderr and "Traceback" not in stderr
        deadline = time.time() + 10
        while any(alive(pid) for pid in children) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in children), "the server or its worker outlived bench"
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["interrupted"] == signal.Signals(signum).name
        assert summary["levels"][0]["interrupted"] and summary["levels"][0]["requests_ok"] > 0
        assert "ready on" in (folder / "server.log").read_text()  # the server's log is kept
    finally:
        bench.kill()
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_sigkill_of_bench_takes_its_server_down(echo, body, tmp_path):
    bench, children = _start_bench(echo, tmp_path / "r", body)
    try:
        bench.kill()
        bench.wait(10)
        deadline = time.time() + 10
        while any(alive(pid) for pid in children) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in children), "orphans under PID 1 after SIGKILL of bench"
    finally:
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_model_that_cannot_load_is_reported_within_seconds_with_the_reason(tmp_path, body):
    broken = make_archive(tmp_path / "store", "broken_handler.py", "broken")
    started = time.perf_counter()
    result = launchkit("bench", str(broken), "-i", body, "-r", "10", "-rl", str(tmp_path / "r"), timeout=120)
    elapsed = time.perf_counter() - started
    assert result.returncode == 1 and "cannot be loaded" in result.stderr
    assert "weights file is corrupt (on purpose)" in result.stderr and "Traceback" not in result.stderr
    assert elapsed < 30, f"took {elapsed:.0f} s to say the model cannot load"
    assert "weights file is corrupt" in (tmp_path / "r" / "server.log").read_text()  # kept in the report folder


# --- validated before the run -----------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--report-dir", "/proc/nope"], "cannot write there"),
    (["--fail-on", "p99=abc"], "--fail-on"),
    (["--max-error-rate", "lots"], "--max-error-rate"),
    (["--compare", "/nonexistent/summary.json"], "/nonexistent/summary.json"),
])
def test_bad_arguments_are_refused_before_anything_runs(status_server, body, args, message):
    started = time.perf_counter()
    result = launchkit("bench", f"{status_server}/ok", "-i", body, "-r", "10", *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert time.perf_counter() - started < 10


def test_a_report_dir_that_is_a_file_and_a_corrupt_archive_are_clean_errors(status_server, body, tmp_path):
    file = tmp_path / "file"
    file.write_text("x")
    result = launchkit("bench", f"{status_server}/ok", "-i", body, "-rl", str(file))
    assert result.returncode == 2 and "this is a file" in result.stderr
    corrupt = tmp_path / "random.mar"
    corrupt.write_bytes(os.urandom(2000))
    result = launchkit("bench", str(corrupt), "-i", body)
    assert result.returncode == 2 and "not a zip file" in result.stderr and "Traceback" not in result.stderr


def test_a_baseline_of_another_benchmark_is_refused_unless_forced(status_server, body, tmp_path):
    assert launchkit("bench", f"{status_server}/ok", "-i", body, "-c", "2", "-r", "50", "--quiet", "-rl",
                     str(tmp_path / "base")).returncode == 0
    other = launchkit("bench", f"{status_server}/mixed", "-i", body, "-c", "2", "-r", "50", "--quiet", "-rl",
                      str(tmp_path / "other"), "--compare", str(tmp_path / "base"), "--max-error-rate", "100%")
    assert other.returncode == 2 and "not the same benchmark" in other.stderr and "its target was" in other.stderr
    forced = launchkit("bench", f"{status_server}/slow/1", "-i", body, "-c", "2", "-r", "50", "--quiet", "-rl",
                       str(tmp_path / "forced"), "--compare", str(tmp_path / "base"), "--force")
    # compared, as asked: every answer of /slow/1 waits a millisecond that /ok's did not, so throughput and
    # p99 regress beyond the default thresholds whatever the machine's load
    assert forced.returncode == 3 and "comparison with the baseline" in forced.stdout, forced.stderr
    assert "REGRESSED" in forced.stdout and "performance regressed" in forced.stderr


# --- benchmark-ab.py habits -------------------------------------------------------------------------------------


def test_a_url_of_a_mar_is_registered_on_a_server_bench_starts(echo, body, tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "echo.mar").write_bytes(echo.read_bytes())
    files = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory",
                              str(folder)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = files.stdout.readline()
        port = int(line.split("port ")[1].split()[0])
        result = launchkit("bench", "--url", f"http://127.0.0.1:{port}/echo.mar", "-i", body, "-ic",
                           "application/json", "-r", "20", "--quiet", "-rl", str(tmp_path / "r"))
        assert result.returncode == 0, result.stderr
        summary = json.loads((tmp_path / "r" / "summary.json").read_text())
        assert summary["model"] == "echo" and summary["levels"][0]["statuses"] == {"200": 20}
        missing = launchkit("bench", "--url", f"http://127.0.0.1:{port}/nope.mar", "-i", body, "-r", "5",
                            "-rl", str(tmp_path / "m"))
        assert missing.returncode != 0 and "could not register" in missing.stderr and "404" in missing.stderr
    finally:
        files.kill()
        files.wait()


def test_benchmark_ab_keys_that_mean_nothing_here_get_a_note(status_server, body, tmp_path):
    config = tmp_path / "ab.json"
    config.write_text(json.dumps({"url": f"{status_server}/ok", "requests": 20, "input": body, "exec_env": "docker",
                                  "gpus": "all", "generate_graphs": True, "report_location": str(tmp_path / "r")}))
    result = launchkit("bench", "--config", str(config), "--quiet")
    assert result.returncode == 0, result.stderr
    for key in ("exec_env", "gpus", "generate_graphs"):
        assert f"{key} ignored" in result.stderr
