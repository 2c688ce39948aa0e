"""`launchkit tune --run`: the best `launchkit run` recipe for a program that prints its own figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROGRAM = str(Path(__file__).parent.parent / "fixtures" / "figure_program.py")


def tune(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launchkit", "tune", *args], capture_output=True, text=True,
                          timeout=240)


@pytest.mark.parametrize("metric", ["throughput", r"throughput: ([0-9.]+) items/s"])
def test_the_best_recipe_is_found_from_the_programs_own_figure(metric, tmp_path):
    result = tune("--run", PROGRAM, "--metric", metric, "--space", "instances=1,2;allocator=auto,default;omp=gnu",
                  "--report-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["trials"]) == 4 and all(trial["status"] == "ok" for trial in summary["trials"])
    best = summary["best"]
    assert best["config"]["instances"] == 2 and best["total"] == pytest.approx(2 * 100 / 2 ** 0.5, rel=1e-3)
    assert best["per_instance"] == pytest.approx([70.711, 70.711], rel=1e-3)
    assert (tmp_path / "best-command.txt").read_text().startswith("launchkit run --ninstances 2 ")
    assert result.stdout.startswith("best: 2 instance(s)")


def test_no_readable_figure_exits_7(tmp_path):
    result = tune("--run", f"{PROGRAM} quiet", "--metric", "throughput", "--space", "instances=1;allocator=auto;omp=gnu",
                  "--report-dir", str(tmp_path))
    assert result.returncode == 7 and "check --metric" in result.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["trials"][0]["status"] == "no-metric"


@pytest.mark.parametrize("args, message", [
    (("--run", PROGRAM), "--run 'PROGRAM [ARGS]' and --metric REGEX|KEY go together"),
    (("--run", PROGRAM, "--metric", "throughput: [0-9]+"), "give the number as the first group"),
    (("tiny", "--run", PROGRAM, "--metric", "throughput"), "TARGET: for tuning a served model"),
    (("--run", PROGRAM, "--metric", "throughput", "--space", "workers=2"), "with --run the knobs are instances"),
])
def test_bad_run_usage_exits_2(args, message):
    result = tune(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("stop_signal", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_keeps_the_runs_measured(tmp_path, stop_signal):
    import signal

    from tests.serve.conftest import wait_for

    # the first run finishes with its figure; every later run hangs (and says so), so Ctrl-C comes
    # after one measured run and during another
    slow = tmp_path / "slow.py"
    slow.write_text(f"""import pathlib, time
first = pathlib.Path({str(tmp_path / "first")!r})
print('throughput: 7.5', flush=True)
if first.exists():
    pathlib.Path({str(tmp_path / "hanging")!r}).touch()
    time.sleep(60)
first.touch()
""")
    process = subprocess.Popen([sys.executable, "-m", "launchkit", "tune", "--run", str(slow), "--metric",
                                r"throughput: ([0-9.]+)", "--space", "instances=1,2;allocator=auto;omp=gnu",
                                "--report-dir", str(tmp_path / "r")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               # a suite started in the background (`cmd &`) runs with SIGINT ignored, which
                               # children inherit; a Ctrl-C test needs it as a terminal would deliver it
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for(lambda: (tmp_path / "hanging").exists() or process.poll() is not None, timeout=120,
                 what="a second run under way")
        process.send_signal(signal.Signals[stop_signal])
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.Signals[stop_signal], err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["interrupted"] == stop_signal and "Traceback" not in err
    assert f"stopped by {stop_signal}" in err
    import psutil  # the run in progress went with tune: no instance of the program is left

    def left() -> list[int]:
        return [p.pid for p in psutil.process_iter(["cmdline"]) if str(slow) in " ".join(p.info["cmdline"] or ())]

    wait_for(lambda: not left(), timeout=15, what="the program's instances gone")
    measured = [trial for trial in summary["trials"] if trial["status"] == "ok"]
    assert len(measured) == 1 and measured[0]["total"] == pytest.approx(7.5)  # the finished run is kept
