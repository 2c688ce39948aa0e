"""The load generator against real local servers: counting, percentiles, rate keeping."""

from __future__ import annotations

import asyncio

import pytest

from launchkit.bench.loadgen import LoadSpec, run_level
from launchkit.bench.requests import Payload, Target, encode_requests
from launchkit.bench.stats import latency_summary, summarize, windows_agree


def drive(url: str, spec: LoadSpec, body: bytes = b"{}"):
    target = Target.from_url(url)
    requests = encode_requests(target, [Payload(body, "application/json")])
    return asyncio.run(run_level(target, requests, spec))


def test_percentiles_are_exact_linear_interpolation_hand_computed():
    # 1..10 ms: rank = p/100 * (n - 1), linear between neighbours (worked by hand)
    summary = latency_summary([ms * 1_000_000 for ms in range(10, 0, -1)], (50.0, 90.0, 99.0, 25.0))
    assert summary == {"p50": 5.5, "p90": 9.1, "p99": 9.91, "p25": 3.25, "mean": 5.5, "min": 1.0, "max": 10.0}
    # one sample: every percentile is that sample, at microsecond precision (not whole ms)
    assert latency_summary([1_234_567], (50.0, 99.9)) == {"p50": 1.235, "p99.9": 1.235, "mean": 1.235,
                                                           "min": 1.235, "max": 1.235}
    assert latency_summary([], (50.0,)) == {}


def _by_hand(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    rank = percent / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def test_percentiles_of_recorded_latencies_match_a_second_method(status_server):
    samples = drive(f"{status_server}/ok", LoadSpec(concurrency=4, requests=600))
    result = summarize(samples, 4, None, (50.0, 90.0, 99.0, 99.9))
    values = [ns / 1e6 for ns in samples.latency_ns]
    for percent in (50.0, 90.0, 99.0, 99.9):
        assert result.latency_ms[f"p{percent:g}"] == pytest.approx(_by_hand(values, percent), abs=0.0005)
    assert result.requests_ok == 600 and result.requests_failed == 0
    assert result.latency_ms["p50"] < 50  # microsecond precision, not whole milliseconds
    assert result.latency_ms["p50"] != round(result.latency_ms["p50"])


def test_503_and_500_are_counted_exactly_as_errors(status_server):
    samples = drive(f"{status_server}/mixed", LoadSpec(concurrency=3, requests=350))
    result = summarize(samples, 3, None)
    expected_503 = sum(1 for n in range(1, 351) if n % 5 == 0)
    expected_500 = sum(1 for n in range(1, 351) if n % 5 and n % 7 == 0)
    assert result.statuses == {"200": 350 - expected_503 - expected_500, "500": expected_500, "503": expected_503}
    assert result.requests_failed == expected_503 + expected_500
    assert result.requests_ok == len(samples.latency_ns) == 350 - expected_503 - expected_500
    # throughput counts answers that succeeded, not requests sent
    seconds = (samples.ended_ns - samples.started_ns) / 1e9
    assert result.throughput == pytest.approx(result.requests_ok / seconds, rel=0.001)


def test_rate_mode_keeps_the_rate_when_the_server_keeps_up(status_server):
    samples = drive(f"{status_server}/ok", LoadSpec(rate=400, duration_s=2.5, connections=16))
    result = summarize(samples, None, 400)
    assert abs(result.achieved_rate - 400) / 400 < 0.02
    assert abs(result.throughput - 400) / 400 < 0.02
    assert result.late_sends <= 0.01 * samples.sent


def test_rate_mode_reports_late_sends_and_corrects_latency_when_it_cannot(status_server):
    # 2 connections × 20 ms per request = 100 req/s at most; ask for 300
    samples = drive(f"{status_server}/slow/20", LoadSpec(rate=300, duration_s=1.5, connections=2))
    result = summarize(samples, None, 300)
    assert result.late_sends > 50
    assert result.latency_ms["p99"] > 3 * result.uncorrected_latency_ms["p99"]
    assert result.throughput < 150


def test_timeouts_and_refused_connections_are_errors_by_kind(status_server):
    samples = drive(f"{status_server}/slow/1500", LoadSpec(concurrency=2, requests=2, timeout_s=0.3))
    assert samples.errors.get("timeout", 0) >= 1
    try:
        drive("http://127.0.0.1:9/ok", LoadSpec(concurrency=1, requests=1))
    except ConnectionError as error:
        assert "cannot connect" in str(error)
    else:
        raise AssertionError("expected a connection error")


def test_stability_rule():
    assert windows_agree([10, 100, 101, 99], 0.05)
    assert not windows_agree([100, 150, 90], 0.1)
    assert not windows_agree([100, 100], 0.1)


def test_closed_loop_handles_every_response_framing(status_server):
    for path in ("/chunked", "/close", "/until-close", "/continue"):
        samples = drive(f"{status_server}{path}", LoadSpec(concurrency=2, requests=60))
        assert samples.statuses == {200: 60} and not samples.errors, (path, samples.errors)

