"""A benchmark run: pick the target (start `launchkit serve` if asked), drive each level, collect.

Targets: an http:// URL; a .mar (or file:// URL of one), served by a `launchkit serve` this run
starts and stops; or nothing, which serves the bundled `tiny` example. The server's settings are
read back from its management API (``GET /models/{model}``) after start, so the report holds
what was applied, and its /metrics give each level's server-side view (see serverview.py).
"""

from __future__ import annotations

import statistics
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from launchkit.archive.manifest import read_manifest
from launchkit.bench.loadgen import LoadSpec, Payload, Samples, Target, encode_requests, run_level
from launchkit.bench.server import ServerUnderTest
from launchkit.bench.serverview import read_model_description, scrape, server_view
from launchkit.bench.stats import DEFAULT_PERCENTILES, LevelResult, summarize, windows_agree
from launchkit.core.errors import LaunchkitError, UsageError

TINY_INPUTS = 64


@dataclass(frozen=True)
class BenchConfig:
    target: str | None = None
    concurrency: tuple[int, ...] = (1,)
    rates: tuple[float, ...] = ()
    poisson: bool = False
    requests: int | None = None
    duration_s: float | None = None
    warmup_requests: int = 0
    warmup_s: float = 0.0
    timeout_s: float = 30.0
    inputs: tuple[str, ...] = ()
    content_type: str = "application/octet-stream"
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES
    stability: bool = False
    stability_tolerance: float = 0.10
    max_windows: int = 10
    trials: int = 1
    connections: int = 64
    # settings of the server this run starts (ignored for a URL target)
    workers: int | None = None
    batch_size: int | None = None
    batch_delay_ms: float | None = None
    cpu_launcher_args: str | None = None
    name: str | None = None
    # a URL target's management API and /metrics (default: the same host on ports 8081 and 8082)
    management_url: str | None = None
    metrics_url: str | None = None

    def validate(self) -> None:
        if self.requests is None and self.duration_s is None:
            raise UsageError("give --requests N or --duration S")
        if self.rates and any(rate <= 0 for rate in self.rates):
            raise UsageError("--rate must be positive")
        if any(level < 1 for level in self.concurrency):
            raise UsageError("--concurrency must be at least 1")
        if self.trials < 1:
            raise UsageError("--trials must be at least 1")


@dataclass
class BenchResult:
    config: BenchConfig
    url: str
    levels: list[LevelResult]
    server: dict[str, Any] | None = None  # settings as applied, read back from the server
    trials: list[list[LevelResult]] = field(default_factory=list)


def server_args(config: BenchConfig) -> list[str]:
    """`launchkit serve` flags for the settings a bench run asks of the server it starts."""
    args = []
    for flag, value in (("--workers", config.workers), ("--batch-size", config.batch_size),
                        ("--max-batch-delay", config.batch_delay_ms), ("--cpu-launcher-args", config.cpu_launcher_args)):
        if value is not None:
            args += [flag, str(value)]
    return args


def load_payloads(config: BenchConfig) -> list[Payload]:
    if not config.inputs:
        return [Payload(struct.pack(f"{TINY_INPUTS}f", *[i / TINY_INPUTS for i in range(TINY_INPUTS)]),
                        "application/octet-stream")]
    payloads = []
    for path in config.inputs:
        try:
            payloads.append(Payload(Path(path).read_bytes(), config.content_type))
        except OSError as error:
            raise UsageError(f"--input {path}: {error.strerror}") from None
    return payloads


def model_of(path: str) -> tuple[str | None, str | None]:
    """(model, version) named by a /predictions or KServe v2 infer path."""
    parts = [part for part in path.split("?")[0].split("/") if part]
    if len(parts) >= 2 and parts[0] == "predictions":
        return parts[1], parts[2] if len(parts) > 2 else None
    if len(parts) >= 3 and parts[:2] == ["v2", "models"]:
        return parts[2], parts[4] if len(parts) > 4 and parts[3] == "versions" else None
    return None, None


def _levels(config: BenchConfig) -> list[LoadSpec]:
    base = LoadSpec(requests=config.requests, duration_s=config.duration_s, timeout_s=config.timeout_s,
                    connections=config.connections, poisson=config.poisson)
    if config.rates:
        return [replace(base, rate=rate) for rate in config.rates]
    return [replace(base, concurrency=level) for level in config.concurrency]


def run_bench(config: BenchConfig, work: Path, progress: Callable[[str, Samples], None] | None = None,
              run_async: Callable[[Any], Any] | None = None) -> BenchResult:
    """Run every level (``trials`` times) and return the per-level medians."""
    config.validate()
    payloads = load_payloads(config)
    server: ServerUnderTest | None = None
    target_text = config.target
    try:
        if target_text is None or not target_text.startswith("http://"):
            archive = _archive_for(target_text)
            model = read_manifest(archive).model_name
            server = ServerUnderTest(archive, server_args(config), work / "server.log")
            server.wait_ready()
            url = f"http://127.0.0.1:{server.port}/predictions/{model}"
        else:
            url = target_text
        target = Target.from_url(url)
        requests = encode_requests(target, payloads)
        management_url = server.management_url if server else config.management_url or f"http://{target.host}:8081"
        metrics_url = server.metrics_url if server else config.metrics_url or f"http://{target.host}:8082/metrics"
        model, version = model_of(target.path)
        settings = read_model_description(management_url, model, version) if model else None
        view = _ServerView(metrics_url, model, version) if model else None
        runner = run_async or _default_runner
        trials: list[list[LevelResult]] = []
        for _trial in range(config.trials):
            results = []
            for spec in _levels(config):
                if config.warmup_requests or config.warmup_s:
                    warm = replace(spec, requests=config.warmup_requests or None,
                                   duration_s=config.warmup_s or None)
                    runner(run_level(target, requests, warm, record=False))
                results.append(_measure(config, target, requests, spec, runner, progress, view))
            trials.append(results)
        return BenchResult(config, url, _median_levels(trials), settings, trials)
    except (ConnectionError, ValueError) as error:
        raise LaunchkitError(f"benchmark failed: {error}") from None
    finally:
        if server is not None:
            server.stop()


class _ServerView:
    """Scrapes around each measured window; gives up quietly if the target has no launchkit metrics."""

    def __init__(self, metrics_url: str, model: str, version: str | None) -> None:
        self.metrics_url, self.model, self.version = metrics_url, model, version
        self.available = True

    def start(self) -> Any:
        return scrape(self.metrics_url) if self.available else None

    def finish(self, before: Any) -> dict[str, Any] | None:
        result = server_view(before, scrape(self.metrics_url), self.model, self.version) if before else None
        self.available = result is not None
        return result


def _measure(config: BenchConfig, target: Target, requests: list[bytes], spec: LoadSpec, runner,
             progress, view: _ServerView | None = None) -> LevelResult:
    label = f"rate={spec.rate:g}/s" if spec.rate else f"c={spec.concurrency}"
    report = (lambda samples: progress(label, samples)) if progress else None

    def window() -> LevelResult:
        before = view.start() if view else None
        samples = runner(run_level(target, requests, spec, progress=report))
        result = summarize(samples, spec.concurrency, spec.rate, config.percentiles)
        return replace(result, server_view=view.finish(before)) if view and before else result

    if not config.stability:
        return window()
    windows: list[LevelResult] = []
    while len(windows) < config.max_windows:
        windows.append(window())
        throughput = [w.throughput for w in windows]
        p50 = [w.latency_ms.get("p50", 0.0) for w in windows]
        if windows_agree(throughput, config.stability_tolerance) and windows_agree(p50, config.stability_tolerance):
            return replace(windows[-1], stable=True)
    return replace(windows[-1], stable=False)


def _median_levels(trials: list[list[LevelResult]]) -> list[LevelResult]:
    if len(trials) == 1:
        return trials[0]
    medians = []
    for index in range(len(trials[0])):
        runs = sorted((trial[index] for trial in trials), key=lambda r: r.throughput)
        middle = runs[len(runs) // 2]
        latency = {key: round(statistics.median(r.latency_ms.get(key, 0.0) for r in runs), 3)
                   for key in middle.latency_ms}
        medians.append(replace(middle, throughput=round(statistics.median(r.throughput for r in runs), 2),
                               latency_ms=latency))
    return medians


def _archive_for(target: str | None) -> Path:
    if target is None:
        from launchkit.examples.cache import ensure_examples

        return ensure_examples(("tiny",))[0]
    path = Path(target[len("file://"):] if target.startswith("file://") else target)
    if not path.exists():
        raise UsageError(f"target {target}: no such file; give an http:// URL, a .mar, or nothing (bundled example)")
    return path


def _default_runner(coroutine: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coroutine)
    except ImportError:
        import asyncio

        return asyncio.run(coroutine)
