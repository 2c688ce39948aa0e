"""What a bench run is asked to do, parsed and checked before anything starts.

Everything that can be wrong with a request is found here, up front (a wrong value, a flag that
would be silently ignored, a baseline that is not comparable), so a run never measures for
minutes and then fails on its arguments.

benchmark-ab.py's JSON ``--config`` keys are accepted; those that mean nothing here are named in
a note instead of being refused or silently dropped.
"""

from __future__ import annotations

import math

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from launchkit.bench.stats import DEFAULT_PERCENTILES
from launchkit.core.errors import UsageError
from launchkit.examples.targets import names_an_example

# benchmark-ab.py's keys that map onto bench's own options
AB_CONFIG_KEYS = {"url", "concurrency", "requests", "batch_size", "batch_delay", "workers", "input", "content_type",
                  "report_location", "duration", "rate", "warmup", "timeout"}
# ...and those that mean nothing here, with the reason (said once, as a note)
AB_IGNORED_KEYS = {
    "exec_env": "bench runs the server locally, as a process it starts and stops",
    "gpus": "launchkit serves on CPUs",
    "image": "no Docker image is used", "docker_runtime": "no Docker image is used",
    "backend_profiling": "the server-side view (from /metrics) is always reported",
    "handler_profiling": "handler time by stage is always reported",
    "generate_graphs": "plots are always written", "config_properties": "use --cpu-launcher-args / a .mar",
    "inference_model_url": "TARGET or --url is the inference URL", "tmp_dir": "temporary files go to the system's",
    "result_file": "the report folder holds every result", "benchmark_backend": "bench is its own load generator",
    "metrics": "the server-side view is always reported", "test_plan": "give the levels with -c/--rate",
}
SERVER_FLAGS = {"workers": "-w/--workers", "batch_size": "-bs/--batch-size", "batch_delay_ms": "-bd/--batch-delay",
                "cpu_launcher_args": "--cpu-launcher-args"}


SECRET_HEADERS = {"authorization", "proxy-authorization", "cookie", "x-api-key", "x-auth-token"}
NO_BODY_METHODS = {"HEAD", "TRACE", "CONNECT"}  # may not carry a body (HEAD's answers carry none to time)
_TOKEN = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def parse_header(text: str, flag: str = "-H/--header") -> tuple[str, str]:
    """``"Name: value"`` as curl, ab and hey take it; a UsageError that shows the form otherwise."""
    name, colon, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not colon or not name or not set(name) <= _TOKEN:
        raise UsageError(f"{flag} {text!r}: expected \"Name: value\" (a header name of letters, digits and "
                         "-_.!#$%&'*+^`|~, a colon, then its value), e.g. -H \"Authorization: Bearer TOKEN\"")
    if "\r" in value or "\n" in value or "\0" in value:
        raise UsageError(f"{flag} {name}: the value may not hold line breaks or NUL bytes")
    return name, value


def masked(headers: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """Headers as reports and logs show them: credentials' values replaced by ***."""
    return [(name, "***" if name.lower() in SECRET_HEADERS else value) for name, value in headers]


def masked_argv(argv: list[str]) -> list[str]:
    """A command line as reports record it: the values of credential headers (-H "Authorization: …")
    replaced by ***, however the flag was spelled (-H X, -HX, --header X, --header=X)."""
    shown = []
    for arg in argv:
        prefix = next((p for p in ("--header=", "-H") if arg.startswith(p) and len(arg) > len(p)), "")
        name, colon, _ = arg[len(prefix):].partition(":")
        shown.append(f"{prefix}{name}: ***" if colon and name.strip().lower() in SECRET_HEADERS else arg)
    return shown


def parse_method(text: str) -> str:
    method = text.strip().upper()
    if not method or not set(method) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ-"):
        raise UsageError(f"-m/--method {text!r}: expected an HTTP method such as GET, POST, PUT or DELETE")
    if method == "HEAD":
        raise UsageError("-m HEAD: bench times answers with a body; use GET to time the same route")
    return method


@dataclass(frozen=True)
class BenchConfig:
    target: str | None = None  # None: the bundled tiny example; a .mar; an http(s) URL
    concurrency: tuple[int, ...] = (1,)
    rates: tuple[float, ...] = ()
    poisson: bool = False
    requests: int | None = None
    duration_s: float | None = None
    warmup_requests: int = 0
    warmup_s: float = 0.0
    timeout_s: float = 30.0
    inputs: tuple[str, ...] = ()
    content_type: str | None = None  # None: the archive's declared one, or application/octet-stream
    method: str | None = None  # None: POST with a body, GET without one (a URL target and no --input)
    headers: tuple[tuple[str, str], ...] = ()  # sent on every request; credentials masked in reports
    keep_alive: bool = True
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES
    stability: bool = False
    stability_tolerance: float = 0.10
    max_windows: int = 10
    trials: int = 1
    connections: int = 64
    max_error_rate: float = 0.0  # fraction of failed requests a level may have before the run fails
    clients: int = 1  # load-generating processes (see clients.py)
    # settings of the server this run starts (refused for a URL target)
    workers: int | None = None
    batch_size: int | None = None
    batch_delay_ms: float | None = None
    cpu_launcher_args: str | None = None
    name: str | None = None
    # a URL target's management API and /metrics (default: the same host on ports 8081 and 8082)
    management_url: str | None = None
    metrics_url: str | None = None

    @property
    def target_kind(self) -> TargetKind:
        return target_kind(self.target)

    @property
    def starts_a_server(self) -> bool:
        return self.target_kind is not TargetKind.URL

    def validate(self) -> None:
        if self.requests is None and self.duration_s is None:
            raise UsageError("give --requests N or --duration S")
        if self.rates and any(rate <= 0 for rate in self.rates):
            raise UsageError("--rate must be positive")
        if any(level < 1 for level in self.concurrency):
            raise UsageError("--concurrency must be at least 1")
        if self.trials < 1:
            raise UsageError("--trials must be at least 1")
        if self.clients < 1:
            raise UsageError("--clients must be at least 1")
        if self.clients > 1 and not self.rates and min(self.concurrency) < self.clients:
            raise UsageError(f"--clients {self.clients} splits each level's connections over {self.clients} processes: "
                             f"every concurrency level must be at least {self.clients} (got {min(self.concurrency)})")
        if self.clients > 1 and self.requests is not None and self.requests < self.clients:
            raise UsageError(f"--requests {self.requests} cannot be split over --clients {self.clients}")
        if not 0 <= self.max_error_rate <= 1:
            raise UsageError(f"--max-error-rate {self.max_error_rate * 100:g}%: give a percentage from 0 to 100")
        if not self.starts_a_server:
            given = [flag for key, flag in SERVER_FLAGS.items() if getattr(self, key) is not None]
            if given:
                raise UsageError(f"{', '.join(given)} set the server that bench starts for a .mar; {self.target} is "
                                 "a running server, which keeps its own settings. Drop them, or give a .mar")
        if self.method is not None:
            parse_method(self.method)
        has_body = bool(self.inputs) or self.starts_a_server
        if has_body and self.method in NO_BODY_METHODS:
            raise UsageError(f"-m {self.method} cannot carry a request body: drop --input, or choose another method")

    @property
    def effective_method(self) -> str:
        if self.method is not None:
            return self.method.upper()
        return "POST" if self.inputs or self.starts_a_server else "GET"

    def levels_description(self) -> str:
        if self.rates:
            return "rate " + ", ".join(f"{rate:g}/s" for rate in self.rates)
        return "concurrency " + ", ".join(str(level) for level in self.concurrency)


class TargetKind(StrEnum):
    EXAMPLE = "example"  # nothing (tiny) or a bundled example's name
    ARCHIVE = "archive"  # a .mar (or folder) on disk
    REMOTE_ARCHIVE = "remote-archive"  # an http(s) URL of a .mar: registered on a server bench starts
    URL = "url"  # an endpoint of a running server


def target_kind(target: str | None) -> TargetKind:
    if names_an_example(target):
        return TargetKind.EXAMPLE
    assert target is not None
    scheme = urlsplit(target).scheme.lower()
    if scheme in ("http", "https"):
        return TargetKind.REMOTE_ARCHIVE if urlsplit(target).path.endswith(".mar") else TargetKind.URL
    return TargetKind.ARCHIVE


MAX_SWEEP_STEPS = 1000  # each step is a measured run: more would take days, never a sweep a user meant


def parse_range(text: str, flag: str, kind: type) -> tuple[Any, ...]:
    """``start:end[:step]`` (perf_analyzer's form), end included."""
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        start, end = kind(parts[0]), kind(parts[1])
        step = kind(parts[2]) if len(parts) == 3 else kind(1)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected start:end[:step], e.g. 1:8 or 1:16:2") from None
    if not all(math.isfinite(value) for value in (start, end, step)) or step <= 0 or end < start or start <= 0:
        raise UsageError(f"{flag} {text!r}: need 0 < start <= end and a positive step")
    if (end - start) / step >= MAX_SWEEP_STEPS:  # found by fuzzing: 12:1e308:5 built a list until memory ran out
        raise UsageError(f"{flag} {text!r}: a sweep of more than {MAX_SWEEP_STEPS} steps; use a larger step")
    count = (end - start) // step + 1 if kind is int else int((end - start) / step + 1e-9) + 1
    # start + i * step, not repeated addition: 1e83 + 1 is 1e83, and a sweep adding to it never ends
    return tuple(start + index * step for index in range(count))


def parse_warmup(text: str | None) -> tuple[int, float]:
    """``--warmup 200`` (requests) or ``--warmup 2s`` (seconds)."""
    if not text:
        return 0, 0.0
    try:
        if text.endswith("s"):
            return 0, float(text[:-1])
        return int(text), 0.0
    except ValueError:
        raise UsageError(f"--warmup {text!r}: give a number of requests (200) or seconds (2s)") from None


def parse_percent(text: str, flag: str) -> float:
    """``5%`` or ``5`` → 0.05."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected a percentage, e.g. 0 or 1%") from None
    return value / 100


def load_ab_config(path: str) -> tuple[dict[str, Any], list[str]]:
    """benchmark-ab.py's JSON config: (the keys bench uses, notes on the keys that mean nothing here)."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as error:
        raise UsageError(f"--config {path}: {error.strerror}") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise UsageError(f"--config {path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected a JSON object of benchmark-ab.py's keys")
    unknown = set(data) - AB_CONFIG_KEYS - set(AB_IGNORED_KEYS)
    if unknown:
        raise UsageError(f"--config {path}: unknown keys {sorted(unknown)}; known: {sorted(AB_CONFIG_KEYS)} (and "
                         f"benchmark-ab.py's {sorted(AB_IGNORED_KEYS)}, which mean nothing here)")
    notes = [f"--config {path}: {key} ignored ({AB_IGNORED_KEYS[key]})" for key in sorted(data)
             if key in AB_IGNORED_KEYS]
    return {key: value for key, value in data.items() if key in AB_CONFIG_KEYS}, notes


def comparable(baseline: dict[str, Any], config: BenchConfig, model: str | None) -> list[str]:
    """Why a baseline summary is not comparable with this run (empty: it is)."""
    reasons = []
    old = baseline.get("config") or {}
    if baseline.get("model") and model and baseline["model"] != model:
        reasons.append(f"it measured model {baseline['model']!r}, this run measures {model!r}")
    if target_kind(old.get("target")) != config.target_kind:
        reasons.append(f"its target was {old.get('target') or 'the bundled example'}, this one is "
                       f"{config.target or 'the bundled example'}")
    elif config.target_kind is TargetKind.URL and old.get("target") != config.target:
        reasons.append(f"its target was {old.get('target')}, this one is {config.target}")
    for key, flag in SERVER_FLAGS.items():
        if old.get(key) != getattr(config, key):
            reasons.append(f"its {flag} was {old.get(key)}, this run's is {getattr(config, key)}")
    levels = {level.get("level") for level in baseline.get("levels", [])}
    ours = {f"rate={rate:g}/s" for rate in config.rates} or {f"c={level}" for level in config.concurrency}
    if not levels & ours:
        reasons.append(f"its levels {sorted(levels)} and this run's {sorted(ours)} have none in common")
    return reasons
