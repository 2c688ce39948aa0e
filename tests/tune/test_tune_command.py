"""`launchkit tune` as a user runs it: real servers, bench's load generator, reports, exit statuses.

Small spaces and short levels keep each run to seconds; every server tune starts is checked gone.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.serve.conftest import Server, free_port, make_archive

FAST = ("--level-seconds", "0.4")
# a space of 4 configurations: one knob beyond the default's each way
SMALL = "workers=1,2;batch=1,2;delay=0;cores=auto;streams=1;variant=original;wait=auto;allocator=auto;omp=auto"


def launchkit(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launchkit", *args], capture_output=True, text=True, timeout=timeout)


def servers_left() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "launchkit" in cmdline and "serve" in cmdline and any("launchkit-bench-store" in part or ".mar" in part
                                                                  for part in cmdline):
            found.append(process)
    return found


@dataclass(frozen=True)
class Stopped:
    """What the interrupted first half of the shared run left: its exit, its stderr, its summary, and
    the servers still running right after it exited."""

    returncode: int
    stderr: str
    summary: dict
    servers_left: list


@pytest.fixture(scope="module")
def interrupted_then_resumed(tmp_path_factory) -> tuple[Path, Stopped, subprocess.CompletedProcess]:
    """One brute-mode run on the bundled tiny example, stopped with Ctrl-C after its first trial and
    continued with --resume: the report checks read the resumed run's report (one run serves both)."""
    folder = tmp_path_factory.mktemp("tuned") / "report"
    flags = ("--latency-budget", "50", "--mode", "brute", "--space", SMALL, *FAST)
    process = subprocess.Popen([sys.executable, "-m", "launchkit", "tune", *flags, "--report-dir", str(folder)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = folder / "trials.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not journal.exists() or not journal.read_text().strip()):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=90)
    stopped = Stopped(process.returncode, err, json.loads((folder / "summary.json").read_text()), servers_left())
    resumed = launchkit("tune", *flags, "--resume", str(folder))
    return folder, stopped, resumed


@pytest.fixture(scope="module")
def tuned(interrupted_then_resumed) -> Path:
    folder, _stopped, result = interrupted_then_resumed
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("best: ") and "× the default configuration's throughput" in result.stdout \
        or "the default configuration is the best found" in result.stdout
    return folder


def test_ctrl_c_keeps_what_was_measured_and_resume_continues(interrupted_then_resumed):
    folder, stopped, resumed = interrupted_then_resumed
    assert stopped.returncode == 130, stopped.stderr
    assert f"continue with --resume {folder}" in stopped.stderr
    assert stopped.summary["interrupted"] == "SIGINT" and 1 <= len(stopped.summary["trials"]) < 4
    assert not stopped.servers_left
    assert resumed.returncode == 0, resumed.stderr
    trials = json.loads((folder / "summary.json").read_text())["trials"]
    configs = [json.dumps(t["config"], sort_keys=True) for t in trials]
    assert len(trials) == 4 and len(set(configs)) == 4  # nothing measured twice


def test_the_report_holds_default_best_and_every_trial(tuned):
    summary = json.loads((tuned / "summary.json").read_text())
    # every trial measured (over the budget is a measurement too: a busy machine can push a p99 past 50 ms)
    assert len(summary["trials"]) == 4 and {t["status"] for t in summary["trials"]} <= {"ok", "over-budget"}
    for key in ("default", "best"):
        entry = summary[key]
        assert {"config", "concurrency", "throughput_rps", "p99_ms"} <= set(entry)
        assert entry["throughput_rps"] > 0 and entry["p99_ms"] <= 50
    assert summary["default"]["config"]["workers"] == 1 and summary["default"]["config"]["batch_size"] == 1
    # the two leaders were measured again, longer (and the next, while a leader fell out), and the best
    # is chosen by its confirmation
    confirmed = [t for t in summary["trials"] if t["confirmed"]]
    assert len(confirmed) >= 2 and summary["best"]["label"] in {t["label"] for t in confirmed}
    assert summary["best"]["throughput_rps"] == max(t["throughput_rps"] for t in confirmed if t["status"] == "ok")
    assert any(t["reused_server"] for t in summary["trials"])  # a worker count alone is rescaled in place
    rows = (tuned / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("trial,workers,cores_per_worker,streams,batch_size,delay_ms,variant") and len(rows) == 5
    assert (tuned / "tune.png").stat().st_size > 10_000
    assert summary["verdict"] in (tuned / "report.md").read_text()
    assert not servers_left()


def test_best_config_properties_serves_the_best_configuration_from_anywhere(tuned, tmp_path):
    summary = json.loads((tuned / "summary.json").read_text())
    best = summary["best"]["config"]
    properties = tuned / "best" / "config.properties"
    assert (tuned / "best" / "serve-command.txt").read_text().startswith("launchkit serve /")
    server = Server(["--ts-config", str(properties)], free_port())
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.management_port}/models/tiny") as answer:
            described = json.loads(answer.read())[0]
        assert described["batchSize"] == best["batch_size"] and described["minWorkers"] == best["workers"]
        body = json.dumps({"data": [0.5] * 64}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{server.port}/predictions/tiny", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as answer:
            assert answer.status == 200
    finally:
        server.stop()


def test_a_configuration_that_cannot_load_is_recorded_and_the_search_goes_on(tmp_path):
    archive = make_archive(tmp_path / "store", "picky_handler.py", "picky")
    body = tmp_path / "body.txt"
    body.write_text("hello")
    space = SMALL.replace("batch=1,2", "batch=1,4")
    folder = tmp_path / "r"
    result = launchkit("tune", str(archive), "--mode", "brute", "--space", space, "--input", str(body), *FAST,
                       "--report-dir", str(folder))
    assert result.returncode == 0, result.stderr
    trials = json.loads((folder / "summary.json").read_text())["trials"]
    failed = [t for t in trials if t["status"] == "failed"]
    assert len(failed) == 2 and all(t["config"]["batch_size"] == 4 for t in failed)
    assert all("cannot batch more than 2" in t["error"] for t in failed)
    assert sum(t["status"] == "ok" for t in trials) == 2
    assert not servers_left()


def test_an_impossible_budget_exits_7_and_names_the_closest(tmp_path):
    folder = tmp_path / "r"
    result = launchkit("tune", "--latency-budget", "0.001", "--space", SMALL, *FAST, "--max-time", "40s",
                       "--report-dir", str(folder))
    assert result.returncode == 7, result.stderr
    assert "no configuration meets the constraints; closest:" in result.stdout
    assert "loosen --latency-budget" in result.stderr and "Traceback" not in result.stderr
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["best"] is None and summary["closest"]["status"] == "over-budget"
    assert not (folder / "best").exists()


@pytest.mark.parametrize("args, message", [
    (("--space", "threads=4"), "--space 'threads=4': expected KNOB=V1,V2"),
    (("--max-time", "soon"), "--max-time 'soon': expected a positive duration"),
    (("nope.mar",), "target nope.mar: no such file"),
    (("--resume", "/nonexistent-tune-run"), "--resume: /nonexistent-tune-run/trials.jsonl not found"),
    (("--report-dir", "/proc/nope"), "--report-dir /proc/nope: cannot write there"),
    (("--percentile", "0"), "Invalid value for '--percentile'"),
])
def test_bad_usage_exits_2_before_anything_starts(args, message, tmp_path):
    if args[0] == "--resume":
        args = ("--resume", "/nonexistent-tune-run")
    started = time.monotonic()
    result = launchkit("tune", *args)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert message in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - started < 20
