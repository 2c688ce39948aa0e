"""--clients: a level split over several load-generating processes, merged exactly."""

from __future__ import annotations

import json
import random
import subprocess
import sys

from launchkit.bench.clients import merge, split
from launchkit.bench.loadgen import LoadSpec, Samples
from launchkit.bench.stats import summarize


def test_a_level_is_split_as_evenly_as_can_be():
    assert [s.concurrency for s in split(LoadSpec(concurrency=7, duration_s=5), 3)] == [3, 2, 2]
    assert [s.requests for s in split(LoadSpec(concurrency=4, requests=10), 4)] == [3, 3, 2, 2]
    rated = split(LoadSpec(rate=900.0, duration_s=5, connections=64), 3)
    assert [s.rate for s in rated] == [300.0] * 3 and [s.connections for s in rated] == [21] * 3


def test_merged_percentiles_are_those_of_every_latency_not_an_average_of_percentiles():
    chooser = random.Random(7)
    parts = []
    for scale in (1, 5, 20):  # three clients with very different latencies
        part = Samples(started_ns=1_000 * scale, ended_ns=2_000_000_000 + scale)
        part.latency_ns = [int(chooser.expovariate(1 / (scale * 1e6))) for _ in range(2000)]
        part.completed_at_ns = sorted(chooser.randrange(part.started_ns, part.ended_ns) for _ in range(2000))
        part.statuses = {200: 2000, 503: scale}
        part.error_bodies = {503: [b"busy"] * 2}
        parts.append(part)
    merged = merge(parts)
    together = summarize(merged, 3, None)
    everything = sorted(latency for part in parts for latency in part.latency_ns)
    assert merged.ok == 6000 and merged.statuses == {200: 6000, 503: 26} and len(merged.error_bodies[503]) == 3
    assert abs(together.latency_ms["p50"] - everything[3000] / 1e6) < everything[3000] / 1e6 * 0.01
    averaged = sum(summarize(part, 1, None).latency_ms["p99"] for part in parts) / 3
    assert abs(together.latency_ms["p99"] - averaged) > 1  # what averaging per-client percentiles would get wrong
    assert merged.started_ns == 1_000 and merged.ended_ns == 2_000_000_020


def test_two_client_processes_drive_one_level_and_every_answer_is_counted(tmp_path):
    folder = tmp_path / "r"
    result = subprocess.run([sys.executable, "-m", "launchkit", "bench", "-c", "4", "--duration", "2", "--clients",
                             "2", "--quiet", "-rl", str(folder)], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    summary = json.loads((folder / "summary.json").read_text())
    level = summary["levels"][0]
    # the server's own count of answers is the merged count: both processes' requests are in it
    assert level["requests_ok"] > 0 and level["server_view"]["requests_by_status"] == {"200": level["requests_ok"]}


def test_clients_need_a_connection_each():
    result = subprocess.run([sys.executable, "-m", "launchkit", "bench", "-c", "2", "--clients", "4", "-r", "10"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "every concurrency level must be at least 4" in result.stderr
