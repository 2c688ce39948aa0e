"""`launchkit bench` as load tools speak HTTP (methods, headers, GET without a body) and `launchkit ab`
beside real ab: the same flags against the same server, both reports read by the same parser."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.bench.test_trust import launchkit
from tests.serve.conftest import Server, free_port, make_archive


def ab_report_fields(text: str) -> dict[str, str | None]:
    """What TorchServe's benchmark-ab.py reads from ab's report: the first line matching a pattern,
    split on single spaces, one item counted from the end (its reporting.py does exactly this)."""
    def entity(pattern: str, index: int) -> str | None:
        for line in text.splitlines():
            if re.search(pattern, line):
                return line.split(" ")[index].strip()
        return None

    return {"failed": entity("Failed requests:", -1), "throughput": entity("Requests per second:", -3),
            "p50": entity("50%", -1), "p90": entity("90%", -1), "p99": entity("99%", -1),
            "mean": entity(r"Time per request:.*mean\)", -3)}


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ab")
    make_archive(folder, "echo_handler.py", "echo")
    (folder / "body.json").write_text('{"x": 1}')
    with Server(["--model-store", str(folder), "--models", "echo=echo.mar"], free_port()) as server:
        server.folder = folder
        yield server


@pytest.mark.parametrize("keep_alive", [True, False], ids=["-k", "new-connection-each"])
def test_ab_and_launchkit_ab_read_the_same_by_benchmark_ab_parser(echo_server, keep_alive):
    # benchmark-ab.py's own command line: ab -c C -s 300 -n N -k -p FILE -T TYPE URL (its warm-up passes -n 100.0)
    url = f"http://127.0.0.1:{echo_server.port}/predictions/echo"
    flags = ["-c", "4", "-s", "300", "-n", "400.0", *(["-k"] if keep_alive else []), "-p",
             str(echo_server.folder / "body.json"), "-T", "application/json", url]
    ours = launchkit("ab", *flags)
    assert ours.returncode == 0, ours.stderr
    real = subprocess.run(["ab", *[f if f != "400.0" else "400" for f in flags]], capture_output=True, text=True,
                          timeout=120)
    assert real.returncode == 0, real.stderr
    fields = ab_report_fields(ours.stdout), ab_report_fields(real.stdout)
    for parsed in fields:
        assert parsed["failed"] == "0", parsed
        assert float(parsed["throughput"]) > 0 and float(parsed["mean"]) > 0
        assert int(parsed["p50"]) <= int(parsed["p90"]) <= int(parsed["p99"])
    assert "Complete requests:      400" in ours.stdout and ("Keep-Alive requests:    400" in ours.stdout) == keep_alive
    ratio = float(fields[0]["throughput"]) / float(fields[1]["throughput"])
    assert 0.2 < ratio < 5, (ratio, fields)  # the same server within a shared machine's noise
    for label in ("Document Path:          /predictions/echo", "Concurrency Level:      4", "Total body sent:",
                  "Percentage of the requests served within a certain time (ms)", " 100%"):
        assert label in ours.stdout and label in real.stdout, label


def test_launchkit_ab_gets_put_and_sends_headers(status_server, tmp_path):
    body = tmp_path / "body.bin"
    body.write_bytes(b"x" * 1000)
    got = launchkit("ab", "-n", "3", "-H", "X-Trace: 42", f"{status_server}/request")
    assert got.returncode == 0 and "Complete requests:      3" in got.stdout, got.stderr
    put = launchkit("ab", "-n", "2", "-u", str(body), "-T", "application/x-thing", f"{status_server}/request")
    assert put.returncode == 0 and "Total body sent:        2000" in put.stdout
    denied = launchkit("ab", "-n", "4", f"{status_server}/auth")
    assert denied.returncode == 0 and "Non-2xx responses:      4" in denied.stdout  # as ab: a run, not an error
    allowed = launchkit("ab", "-n", "4", "-H", "Authorization: Bearer sekrit", f"{status_server}/auth")
    assert "Non-2xx" not in allowed.stdout and "sekrit" not in allowed.stdout + allowed.stderr


@pytest.mark.parametrize("args, message", [
    (["-Z", "http://127.0.0.1:1/"], "No such option"),
    (["-H", "no colon here", "http://127.0.0.1:1/"], "Name: value"),
    (["-H", "Bad Name: x", "http://127.0.0.1:1/"], "Name: value"),
    (["-n", "ten", "http://127.0.0.1:1/"], "expected a number"),
    (["-n", "2", "-c", "5", "http://127.0.0.1:1/"], "greater than total number"),
    (["-m", "TRACE", "-p", "/etc/hostname", "http://127.0.0.1:1/"], "cannot carry"),
    (["-p", "/no/such/file", "http://127.0.0.1:1/"], "could not open"),
    (["http://127.0.0.1:1"], "give a path"),
    (["https://127.0.0.1:1/"], "http://"),
])
def test_bad_ab_command_lines_exit_2_with_a_reason(args, message):
    result = launchkit("ab", *args)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert message in result.stderr and "Traceback" not in result.stderr


def test_nothing_listening_exits_1():
    result = launchkit("ab", "-n", "3", f"http://127.0.0.1:{free_port()}/")
    assert result.returncode == 1 and "no request was answered" in result.stderr


# --- launchkit bench: methods and headers ------------------------------------------------------------

def test_bench_url_without_input_sends_get(status_server, tmp_path):
    result = launchkit("bench", f"{status_server}/request", "-r", "20", "--warmup", "0", "-q", "-rl",
                       str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["levels"][0]["requests_ok"] == 20 and summary["config"]["method"] is None


def test_bench_methods_headers_and_masked_credentials(status_server, body, tmp_path):
    folder = tmp_path / "r"
    result = launchkit("bench", f"{status_server}/auth", "-r", "30", "--warmup", "0", "-q", "-rl", str(folder),
                       "-H", "Authorization: Bearer sekrit", "--header=X-Api-Key: sekrit", "-m", "PUT", "-i", body)
    assert result.returncode == 0, result.stderr
    everything = result.stdout + result.stderr + "".join(p.read_text(errors="replace") for p in folder.rglob("*")
                                                         if p.is_file() and p.suffix != ".png")
    assert "sekrit" not in everything
    summary = json.loads((folder / "summary.json").read_text())
    assert ["Authorization", "***"] in summary["config"]["headers"] and summary["config"]["method"] == "PUT"
    refused = launchkit("bench", f"{status_server}/auth", "-r", "10", "--warmup", "0", "-q", "-rl", str(tmp_path / "x"))
    assert refused.returncode == 6 and "401" in refused.stderr


def test_bench_sends_what_it_was_told(status_server, body):
    # the status server echoes the method and headers of each request; one request is enough to see them
    from launchkit.bench.requests import Payload, Target, encode_requests

    target = Target.from_url(f"{status_server}/request", "DELETE")
    request = encode_requests(target, [], (("X-Trace", "42"), ("Host", "example")))[0]
    assert request.startswith(b"DELETE /request HTTP/1.1\r\n") and b"Host: example\r\n" in request
    assert b"Content-Length" not in request and request.count(b"Host:") == 1
    with_body = encode_requests(Target.from_url(f"{status_server}/request"), [Payload(b"abc", "text/plain")],
                                (("Content-Type", "application/json"),))[0]
    assert with_body.count(b"Content-Type") == 1 and b"Content-Type: application/json" in with_body
    assert with_body.endswith(b"Content-Length: 3\r\nContent-Type: application/json\r\n\r\nabc")


@pytest.mark.parametrize("args, message", [
    (["-H", "nocolon"], "Name: value"),
    (["-H", "X: a\rb"], "line breaks"),
    (["-m", "HEAD"], "use GET"),
    (["-m", "G E T"], "HTTP method"),
    (["-m", "TRACE", "-i", "/etc/hostname"], "cannot carry a request body"),
])
def test_bench_bad_methods_and_headers_exit_2(status_server, args, message):
    result = launchkit("bench", f"{status_server}/ok", "-r", "5", *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_an_unknown_fail_on_metric_is_refused_not_ignored(status_server, body):
    result = launchkit("bench", f"{status_server}/ok", "-i", body, "-r", "5", "--fail-on", "inferense=+40%")
    assert result.returncode == 2 and "unknown metric 'inferense'" in result.stderr and "inference" in result.stderr
