"""``launchkit ab``: ApacheBench's command line over launchkit's load generator, ab's report out.

Scripts that run ``ab`` and read its report (TorchServe's benchmark-ab.py reads ``Failed
requests:``, ``Requests per second:``, ``Time per request: … (mean)`` and the percentage table by
splitting lines on spaces) read this report unchanged: the labels, layout and units are ab's.
What differs, on purpose, and is said in the report itself:

* ``Failed requests`` counts what ab counts (connection errors, resets, time-outs), and non-2xx
  answers are ``Non-2xx responses`` as in ab; the times are those of the 2xx answers (ab times
  every answer, so a fast 503 lowers its percentiles);
* connections are opened before the first request is timed: ``Connect`` is 0 and ``Processing`` and
  ``Waiting`` equal ``Total`` (each is the time from sending a request to its whole answer);
* after ab's report, a section ab has none of: exact percentiles and the answers by status.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from launchkit import __version__
from launchkit.bench.config import parse_header, parse_method
from launchkit.bench.loadgen import LoadSpec, Samples, run_level
from launchkit.bench.requests import Payload, Target, encode_requests
from launchkit.bench.stats import latency_summary
from launchkit.core import eventloop
from launchkit.core.errors import UsageError

AB_TIME_LIMIT_REQUESTS = 50_000  # ab: -t without -n means at most 50,000 requests
PERCENTS = (50, 66, 75, 80, 90, 95, 98, 99, 100)


@dataclass(frozen=True)
class AbRun:
    """What an ab command line asks for, checked."""

    url: str
    requests: int = 1
    concurrency: int = 1
    time_limit_s: float | None = None
    timeout_s: float = 30.0
    keep_alive: bool = False
    body_file: str | None = None
    method: str = "GET"
    content_type: str = "text/plain"
    headers: tuple[tuple[str, str], ...] = ()


def ab_number(text: str, flag: str) -> float:
    """A number as ab reads it: ``100``, ``100.0`` (benchmark-ab.py's warm-up passes floats)."""
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"ab {flag} {text!r}: expected a number") from None
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"ab {flag} {text!r}: expected a positive number")
    return value


def plan(url: str, requests: str | None, concurrency: str | None, time_limit: str | None, timeout: str | None,
         keep_alive: bool, post_file: str | None, put_file: str | None, content_type: str | None,
         headers: tuple[str, ...], method: str | None) -> AbRun:
    """ab's flags, as ab combines them: -p is a POST, -u a PUT, -t without -n allows 50,000 requests."""
    if post_file and put_file:
        raise UsageError("ab: give -p FILE (POST) or -u FILE (PUT), not both")
    target = Target.from_url(url)  # ValueError for a URL that is not http://host[:port]/path
    if not url.split("://", 1)[1].count("/"):
        raise UsageError(f"ab {url!r}: invalid URL, give a path too (e.g. {url}/)")
    body_file = post_file or put_file
    chosen = parse_method(method) if method else ("POST" if post_file else "PUT" if put_file else "GET")
    if body_file and chosen in ("HEAD", "TRACE", "CONNECT"):
        raise UsageError(f"ab -m {chosen} cannot carry the body of -p/-u")
    limit = ab_number(time_limit, "-t") if time_limit is not None else None
    count = int(ab_number(requests, "-n")) if requests is not None else (
        AB_TIME_LIMIT_REQUESTS if limit is not None else 1)
    level = int(ab_number(concurrency, "-c")) if concurrency is not None else 1
    if count < 1 or level < 1:
        raise UsageError("ab: -n and -c must be at least 1")
    if level > count:
        raise UsageError(f"ab: cannot use concurrency level greater than total number of requests (-c {level} > "
                         f"-n {count})")
    return AbRun(url=f"http://{target.host}:{target.port}{target.path}", requests=count, concurrency=level,
                 time_limit_s=limit or None, timeout_s=ab_number(timeout, "-s") if timeout else 30.0,
                 keep_alive=keep_alive, body_file=body_file, method=chosen,
                 content_type=content_type or "text/plain", headers=tuple(parse_header(h, "-H") for h in headers))


def run(ab: AbRun) -> tuple[Samples, int]:
    """Drive the load; the samples and the size of the body each request sent."""

    target = Target.from_url(ab.url, ab.method)
    body = b""
    if ab.body_file:
        try:
            body = Path(ab.body_file).read_bytes()
        except OSError as error:
            raise UsageError(f"ab: could not open {ab.body_file}: {error.strerror}") from None
    payloads = [Payload(body, ab.content_type)] if ab.body_file else []
    encoded = encode_requests(target, payloads, ab.headers, keep_alive=ab.keep_alive)
    spec = LoadSpec(concurrency=ab.concurrency, requests=ab.requests, duration_s=ab.time_limit_s,
                    timeout_s=ab.timeout_s)
    return eventloop.run(run_level(target, encoded, spec)), len(body)


def report(ab: AbRun, samples: Samples, body_size: int) -> str:
    """ab's report, line for line, then what launchkit adds."""
    target = Target.from_url(ab.url)
    seconds = max((samples.ended_ns - samples.started_ns) / 1e9, 1e-9)
    answered = sum(samples.statuses.values())
    failed = sum(samples.errors.values())
    non_2xx = sum(count for status, count in samples.statuses.items() if not 200 <= status < 300)
    times = sorted(value / 1e6 for value in samples.latency_ns)
    done = max(answered, 1)
    lines = [
        f"This is launchkit ab {__version__}: ApacheBench's command line and report over launchkit's load generator",
        "", f"Benchmarking {target.host} (be patient).....done", "", "",
        f"{'Server Software:':<24}",
        f"{'Server Hostname:':<24}{target.host}",
        f"{'Server Port:':<24}{target.port}", "",
        f"{'Document Path:':<24}{target.path}",
        f"{'Document Length:':<24}{samples.body_bytes // done} bytes", "",
        f"{'Concurrency Level:':<24}{ab.concurrency}",
        f"{'Time taken for tests:':<24}{seconds:.3f} seconds",
        f"{'Complete requests:':<24}{answered}",
        f"{'Failed requests:':<24}{failed}",
    ]
    if failed:
        kinds = samples.errors
        lines.append(f"   (Connect: {kinds.get('connect', 0)}, Receive: {kinds.get('reset', 0)}, Length: 0, "
                     f"Exceptions: {kinds.get('timeout', 0) + kinds.get('protocol', 0)})")
    if non_2xx:
        lines.append(f"{'Non-2xx responses:':<24}{non_2xx}")
    if ab.keep_alive:
        lines.append(f"{'Keep-Alive requests:':<24}{answered}")
    sent_kb = body_size * samples.sent / 1024 / seconds
    received_kb = samples.received_bytes / 1024 / seconds
    lines += [f"{'Total transferred:':<24}{samples.received_bytes} bytes"]
    if ab.body_file:
        lines.append(f"{'Total body sent:':<24}{body_size * samples.sent}")
    lines += [
        f"{'HTML transferred:':<24}{samples.body_bytes} bytes",
        f"{'Requests per second:':<24}{answered / seconds:.2f} [#/sec] (mean)",
        f"{'Time per request:':<24}{ab.concurrency * seconds * 1000 / done:.3f} [ms] (mean)",
        f"{'Time per request:':<24}{seconds * 1000 / done:.3f} [ms] (mean, across all concurrent requests)",
        f"{'Transfer rate:':<24}{received_kb:.2f} [Kbytes/sec] received",
    ]
    if ab.body_file:
        lines += [f"{'':<24}{sent_kb:.2f} kb/s sent", f"{'':<24}{received_kb + sent_kb:.2f} kb/s total"]
    lines += ["", "Connection Times (ms)", "              min  mean[+/-sd] median   max"]
    if times:
        mean = sum(times) / len(times)
        sd = math.sqrt(sum((t - mean) ** 2 for t in times) / max(len(times) - 1, 1))
        row = (f"{round(times[0]):5d} {round(mean):4d} {sd:5.1f} {round(times[len(times) // 2]):6d} "
               f"{round(times[-1]):7d}")
        zero = f"{0:5d} {0:4d} {0.0:5.1f} {0:6d} {0:7d}"
        lines += [f"Connect:    {zero}", f"Processing: {row}", f"Waiting:    {row}", f"Total:      {row}", "",
                  "Percentage of the requests served within a certain time (ms)"]
        for percent in PERCENTS:
            value = round(times[min(len(times) - 1, int(0.5 + len(times) * percent / 100))] if percent < 100
                          else times[-1])
            lines.append(f" {percent:3d}%  {value:5d}" + (" (longest request)" if percent == 100 else ""))
    exact = latency_summary(samples.latency_ns, (50, 90, 99, 99.9))  # bench's own percentiles
    lines += ["", "launchkit ab, beyond ab's report:",
              "  times above are of the 2xx answers; connections were opened before timing (Connect 0)",
              "  exact latency (ms, 2xx): " + ("  ".join(f"{key} {value:.3f}" for key, value in
                                                         exact.items() if key.startswith("p")) or "none"),
              "  answers by status: " + (", ".join(f"{status}: {count}" for status, count in
                                                   sorted(samples.statuses.items())) or "none"),
              "  failures by kind: " + (", ".join(f"{kind}: {count}" for kind, count in
                                                  sorted(samples.errors.items())) or "none")]
    return "\n".join(lines) + "\n"

