"""`launchkit bench` and `launchkit report compare` as a user runs them."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from launchkit.bench.config import TargetKind, parse_range, parse_warmup, target_kind
from launchkit.core.errors import UsageError


def launchkit(*args: str, timeout: float = 180):
    return subprocess.run([sys.executable, "-m", "launchkit", *args], capture_output=True, text=True, timeout=timeout)


def test_report_files_and_plots(status_server, body, tmp_path):
    folder = tmp_path / "report"
    result = launchkit("bench", f"{status_server}/ok", "-i", body, "--concurrency-range", "1:3", "-r", "200", "--quiet",
                       "--report-dir", str(folder), "--percentile", "99.99")
    assert result.returncode == 0, result.stderr
    for name in ("summary.json", "results.csv", "report.md", "latency.png", "sweep.png", "latency_over_time.png"):
        assert (folder / name).stat().st_size > 100, name
    summary = json.loads((folder / "summary.json").read_text())
    assert [level["level"] for level in summary["levels"]] == ["c=1", "c=2", "c=3"]
    assert "p99.99" in summary["levels"][0]["latency_ms"]
    assert summary["machine"]["logical_cpus"] >= 1 and summary["command"] and summary["version"]
    assert "c=3" in result.stdout and "p99 ms" in result.stdout  # the terminal table
    import pandas as pd

    frame = pd.read_csv(folder / "results.csv")
    assert set(frame.columns) == {"level", "concurrency", "rate", "metric", "value"}
    assert frame[(frame.level == "c=2") & (frame.metric == "requests_ok")].value.item() == 200


def test_errors_are_counted_and_reported(status_server, body, tmp_path):
    result = launchkit("bench", f"{status_server}/mixed", "-i", body, "-c", "2", "-r", "100", "--warmup", "0",
                       "--quiet", "--report-dir", str(tmp_path / "r"))
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    level = summary["levels"][0]
    errors_500 = sum(1 for n in range(1, 101) if n % 5 and n % 7 == 0)
    assert level["statuses"] == {"200": 100 - 20 - errors_500, "500": errors_500, "503": 20}
    assert level["requests_failed"] == 20 + errors_500
    assert f"{20 + errors_500} of 100 requests failed (500 ×{errors_500}, 503 ×20)" in result.stderr
    assert result.returncode == 6  # above --max-error-rate (default 0%): the run fails


def _summary_with(path: Path, throughput: float, p99: float) -> Path:
    data = {"levels": [{"level": "c=8", "throughput": throughput, "latency_ms": {"p50": 1.0, "p99": p99}}]}
    path.write_text(json.dumps(data))
    return path


def test_compare_gate_exit_codes(tmp_path):
    base = _summary_with(tmp_path / "base.json", 1000.0, 2.0)
    same = _summary_with(tmp_path / "same.json", 980.0, 2.1)
    slower = _summary_with(tmp_path / "slower.json", 900.0, 2.0)
    laggier = _summary_with(tmp_path / "laggier.json", 1000.0, 2.5)
    assert launchkit("report", "compare", str(base), str(same)).returncode == 0
    result = launchkit("report", "compare", str(base), str(slower))
    assert result.returncode == 3 and "throughput -10.0%" in result.stderr and "REGRESSED" in result.stdout
    assert launchkit("report", "compare", str(base), str(laggier), "--fail-on", "p99=+30%").returncode == 0
    assert launchkit("report", "compare", str(base), str(laggier), "--fail-on", "p99=+20%").returncode == 3
    bad = launchkit("report", "compare", str(base), str(same), "--fail-on", "throughput=+5%")
    assert bad.returncode == 2 and "drops (-N%)" in bad.stderr
    missing = launchkit("report", "compare", str(base), str(tmp_path / "nope.json"))
    assert missing.returncode == 2


def test_bench_with_compare_fails_on_regression(status_server, body, tmp_path):
    first = tmp_path / "first"
    assert launchkit("bench", f"{status_server}/ok", "-i", body, "-c", "2", "-r", "300", "--quiet", "-rl",
                     str(first)).returncode == 0
    baseline = json.loads((first / "summary.json").read_text())
    inflated = copy.deepcopy(baseline)
    inflated["levels"][0]["throughput"] *= 100  # a baseline no run can match
    (tmp_path / "inflated.json").write_text(json.dumps(inflated))
    result = launchkit("bench", f"{status_server}/ok", "-i", body, "-c", "2", "-r", "300", "--quiet", "-rl",
                       str(tmp_path / "s"), "--compare", str(tmp_path / "inflated.json"))
    assert result.returncode == 3 and (tmp_path / "s" / "summary.json").exists()


def test_benchmark_ab_flags_and_config_file(status_server, tmp_path):
    body = tmp_path / "body.json"
    body.write_text('{"x": 1}')
    config = tmp_path / "ab.json"
    config.write_text(json.dumps({"url": f"{status_server}/ok", "concurrency": 2, "requests": 150,
                                  "content_type": "application/json", "input": str(body),
                                  "report_location": str(tmp_path / "ab")}))
    result = launchkit("bench", "--config", str(config), "--quiet")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "ab" / "summary.json").read_text())
    assert summary["config"]["concurrency"] == [2] and summary["config"]["requests"] == 150
    assert summary["config"]["content_type"] == "application/json" and summary["config"]["inputs"] == [str(body)]
    result = launchkit("bench", "-u", f"{status_server}/ok", "-c", "2", "-r", "50", "-ic", "text/plain", "-i",
                       str(body), "-rl", str(tmp_path / "short"), "--quiet")
    assert result.returncode == 0 and (tmp_path / "short" / "summary.json").exists()


def test_bench_starts_the_server_and_records_applied_settings(tmp_path):
    from tests.serve.conftest import make_archive

    archive = make_archive(tmp_path / "store", "echo_handler.py", "echo")
    body = tmp_path / "b.json"
    body.write_text('{"i": 1}')
    result = launchkit("bench", str(archive), "-c", "4", "-r", "200", "-bs", "4", "-bd", "5", "-w", "1", "-i",
                       str(body), "-ic", "application/json", "--quiet", "-rl", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["server"]["batchSize"] == 4 and summary["server"]["maxBatchDelay"] == 5
    assert len(summary["server"]["workers"]) == 1 and summary["levels"][0]["requests_ok"] == 200
    view = summary["levels"][0]["server_view"]  # the server's own account of the same 200 requests
    assert view["requests_by_status"] == {"200": 200}
    assert 1 <= view["batch_size"]["mean"] <= 4 and view["queue_wait_ms"]["count"] == 200
    assert view["handler_ms"]["handle"]["count"] == view["batch_size"]["count"]
    assert "Server-side view" in (tmp_path / "r" / "report.md").read_text()
    assert summary["server"]["optimizationRequested"]["dtype"] == "fp32"  # the applied optimization is recorded


def test_stability_mode_always_writes_a_result(status_server, body, tmp_path):
    result = launchkit("bench", f"{status_server}/ok", "-i", body, "-c", "2", "--duration", "0.3", "--stability",
                       "--max-windows", "3", "--stability-percentage", "0", "--quiet", "-rl", str(tmp_path / "st"))
    assert result.returncode == 0
    level = json.loads((tmp_path / "st" / "summary.json").read_text())["levels"][0]
    assert level["stable"] is False  # 0% tolerance can never be met, and that is not a crash


@pytest.mark.parametrize("args, message", [
    (["http://127.0.0.1:9/ok", "-i", "/etc/hostname", "-r", "5", "--quiet"], "cannot connect"),
    (["--concurrency-range", "8:1"], "start <= end"),
    (["-c", "2", "--rate", "10"], "not both"),
    (["http://127.0.0.1:9/x", "-i", "/nonexistent", "--quiet"], "--input /nonexistent"),
    (["/nonexistent.mar"], "no such file"),
    (["--warmup", "lots"], "--warmup"),
])
def test_bad_input(args, message):
    result = launchkit("bench", *args)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr


def test_a_bundled_examples_name_is_a_target_as_for_tune_and_optimize(tmp_path):
    assert target_kind(None) is TargetKind.EXAMPLE and target_kind("mnist") is TargetKind.EXAMPLE
    assert target_kind("mnist.mar") is TargetKind.ARCHIVE and target_kind("file:///m.mar") is TargetKind.ARCHIVE
    assert target_kind("https://h/m.mar") is TargetKind.REMOTE_ARCHIVE and target_kind("http://h/x") is TargetKind.URL
    result = launchkit("bench", "mnist", "--requests", "40", "-c", "2", "--quiet", "-rl", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["model"] == "mnist" and summary["levels"][0]["requests_ok"] == 40, summary["levels"][0]


def test_ranges_and_warmup_parsing():
    assert parse_range("1:8:2", "--x", int) == (1, 3, 5, 7)
    assert parse_range("100:300:100", "--x", float) == (100.0, 200.0, 300.0)
    assert parse_warmup("2s") == (0, 2.0) and parse_warmup("50") == (50, 0.0)
    with pytest.raises(UsageError):
        parse_range("0:4", "--x", int)
    # found by fuzz/run.py flags: a sweep to 1e308 (or inf) was built in memory until the process died
    for endless in ("12:11e3088:5", "1:inf", "1:2:nan", "1:100000"):
        with pytest.raises(UsageError, match="positive step|more than 1000 steps"):
            parse_range(endless, "--rate", float)
    assert parse_range("10e82:10e82", "--rate", float) == (1e83,)  # 1e83 + 1 == 1e83: the loop never ended
