"""A benchmark run: pick the target (start `launchkit serve` if asked), drive each level, collect.

Targets: an http:// URL; a .mar (or file:// URL of one) served by a `launchkit serve` this run
starts and stops; an http(s):// URL of a .mar, registered on such a server through its
management API (allowed for exactly that URL); or nothing: the bundled `tiny` example.

What can be checked is checked before anything starts (see config.py and inputs.py). The
server's settings are read back from its management API after start, so the report holds what
was applied, and its /metrics give each level's server-side view (see serverview.py).

SIGINT, SIGTERM and SIGHUP stop the run: the server is stopped (it also dies with bench on
SIGKILL: see launch/spawn.py), and the levels measured so far, the interrupted one included,
are returned as a partial result marked ``interrupted``.
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from launchkit.bench.clients import run_level_clients
from launchkit.bench.config import BenchConfig, TargetKind
from launchkit.bench.inputs import load_payloads
from launchkit.bench.compare import STAGE_METRICS
from launchkit.bench.loadgen import LoadSpec, Samples, run_level
from launchkit.bench.requests import Target, encode_requests
from launchkit.bench.server import ServerUnderTest
from launchkit.bench.serverview import read_model_description, scrape, server_view
from launchkit.bench.stats import LevelResult, summarize, windows_agree
from launchkit.core import eventloop
from launchkit.core.errors import LaunchkitError, UsageError
from launchkit.core.signals import STOP_SIGNALS, Interrupted, handling, raise_interrupted
from launchkit.examples.targets import archive_named, example_choices

Progress = Callable[[str, Samples], None]
Status = Callable[[str], None]


@dataclass
class BenchResult:
    config: BenchConfig
    url: str
    levels: list[LevelResult]
    server: dict[str, Any] | None = None  # settings as applied, read back from the server
    trials: list[list[LevelResult]] = field(default_factory=list)
    model: str | None = None
    version: str | None = None
    notes: list[str] = field(default_factory=list)  # what the reader should know (e.g. no management API)
    interrupted: str | None = None  # the signal that stopped the run ("SIGINT"), partial results
    server_log: str | None = None  # the log of the server this run started, kept in the report folder
    client_cpu_s: dict[str, float] = field(default_factory=dict)  # bench's own CPU: before the load, during it


def server_args(config: BenchConfig) -> list[str]:
    """`launchkit serve` flags for the settings a bench run asks of the server it starts."""
    args = []
    for flag, value in (("--workers", config.workers), ("--batch-size", config.batch_size),
                        ("--max-batch-delay", config.batch_delay_ms), ("--cpu-launcher-args", config.cpu_launcher_args)):
        if value is not None:
            args += [flag, str(value)]
    return args


def model_of(path: str) -> tuple[str | None, str | None]:
    """(model, version) named by a /predictions or KServe v2 infer path."""
    parts = [part for part in path.split("?")[0].split("/") if part]
    if len(parts) >= 2 and parts[0] == "predictions":
        return parts[1], parts[2] if len(parts) > 2 else None
    if len(parts) >= 3 and parts[:2] == ["v2", "models"]:
        return parts[2], parts[4] if len(parts) > 4 and parts[3] == "versions" else None
    return None, None


def local_archive(config: BenchConfig) -> Path | None:
    """The .mar a run serves (a bundled example, tiny for no target); None for URL targets. Checked, not started."""
    if config.target_kind not in (TargetKind.EXAMPLE, TargetKind.ARCHIVE):
        return None
    return archive_named(config.target, f"an http:// URL, a .mar, a bundled example ({example_choices()}) or "
                                        "nothing (tiny)")


def _levels(config: BenchConfig) -> list[LoadSpec]:
    base = LoadSpec(requests=config.requests, duration_s=config.duration_s, timeout_s=config.timeout_s,
                    connections=config.connections, poisson=config.poisson)
    if config.rates:
        return [replace(base, rate=rate) for rate in config.rates]
    return [replace(base, concurrency=level) for level in config.concurrency]


def run_bench(config: BenchConfig, report_dir: Path, progress: Progress | None = None,
              status: Status | None = None) -> BenchResult:
    """Run every level (``trials`` times) and return the per-level medians (or a partial result)."""
    config.validate()
    archive = local_archive(config)
    payloads = load_payloads(config.inputs, config.content_type, archive,  # before any server starts
                             bodiless=not config.starts_a_server)
    say = status or (lambda message: None)
    server: ServerUnderTest | None = None
    result = BenchResult(config, config.target or "", [])
    signals = ExitStack()  # stop signals raise Interrupted until the finally below
    signals.enter_context(handling(raise_interrupted))
    try:
        if config.starts_a_server:
            log = report_dir / "server.log"
            result.server_log = str(log)
            say("starting launchkit serve")
            remote = config.target_kind is TargetKind.REMOTE_ARCHIVE
            # a remote .mar is registered on an empty server: its settings go with the registration
            server = ServerUnderTest(archive, [] if remote else server_args(config), log,
                                     allow_url=config.target if remote else None)
            if remote:
                assert config.target is not None
                say(f"registering {config.target}")
                model = server.register(config.target, config)
            else:
                assert server.model is not None  # a local archive: its manifest names the model
                model = server.model
            server.wait_ready(status=say)
            url = f"{server.url}/predictions/{model}"
        else:
            assert config.target is not None
            url = config.target
        result.url = url
        target = Target.from_url(url, config.effective_method)
        requests = encode_requests(target, payloads, config.headers, config.keep_alive)
        management_url = server.management_url if server else config.management_url or f"http://{target.host}:8081"
        metrics_url = server.metrics_url if server else config.metrics_url or f"http://{target.host}:8082/metrics"
        result.model, result.version = model_of(target.path)
        if result.model:
            result.server = read_model_description(management_url, result.model, result.version)
            if result.server is None:
                result.notes.append(f"settings as applied: unknown (no launchkit or TorchServe management API "
                                    f"answered at {management_url}; --management-url points bench at it)")
        view = _ServerView(metrics_url, result.model, result.version,
                           server.proc.pid if server else None) if result.model else None
        specs = _levels(config)
        result.client_cpu_s["before_load"] = round(time.process_time(), 3)  # interpreter, imports, set-up
        for trial in range(config.trials):
            levels: list[LevelResult] = []
            result.trials.append(levels)
            for index, spec in enumerate(specs):
                say(f"level {index + 1} of {len(specs)}" + (f", trial {trial + 1} of {config.trials}"
                                                            if config.trials > 1 else ""))
                if config.warmup_requests or config.warmup_s:
                    warm = replace(spec, requests=config.warmup_requests or None, duration_s=config.warmup_s or None)
                    run_interruptible(run_level(target, requests, warm, record=False))
                levels.append(_measure(config, target, requests, spec, progress, view))
        result.levels = _median_levels(result.trials)
    except _PartialLevel as partial:
        result.interrupted = signal.Signals(partial.signum).name
        if result.trials:
            result.trials[-1].append(partial.level)
        result.levels = _median_levels(result.trials) if result.trials and result.trials[0] else []
    except Interrupted as stop:
        result.interrupted = signal.Signals(stop.signum).name
        result.levels = _median_levels(result.trials) if result.trials and result.trials[0] else []
    except (ConnectionError, ValueError) as error:
        raise LaunchkitError(f"benchmark failed: {error}") from None
    finally:
        if "before_load" in result.client_cpu_s:
            result.client_cpu_s["load"] = round(time.process_time() - result.client_cpu_s["before_load"], 3)
        signals.close()
        if server is not None:
            server.stop()
    return result


class _PartialLevel(Exception):
    def __init__(self, signum: int, level: LevelResult) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.level = level


class _ServerView:
    """Scrapes around each measured window; gives up quietly if the target has no launchkit metrics.

    For a server bench started itself (``pid``), also the CPU time its processes spent per request
    in the window, frontend and workers apart (``--fail-on worker_cpu=+N%``)."""

    def __init__(self, metrics_url: str, model: str, version: str | None, pid: int | None = None) -> None:
        self.metrics_url, self.model, self.version, self.pid = metrics_url, model, version, pid
        self.available = True

    def start(self) -> Any:
        return (scrape(self.metrics_url), self._cpu()) if self.available else None

    def finish(self, before: Any, requests: int) -> dict[str, Any] | None:
        scraped, cpu = before
        result = server_view(scraped, scrape(self.metrics_url), self.model, self.version) if scraped else None
        self.available = result is not None
        after = self._cpu()
        if result is not None and cpu is not None and after is not None and requests:
            result["frontend_cpu_ms_per_request"] = round((after[0] - cpu[0]) * 1000 / requests, 4)
            result["worker_cpu_ms_per_request"] = round((after[1] - cpu[1]) * 1000 / requests, 4)
        return result

    def _cpu(self) -> tuple[float, float] | None:
        """CPU seconds (user + system) of the server process and of all its descendants."""
        if self.pid is None:
            return None
        import psutil

        try:
            frontend = psutil.Process(self.pid)
            own = sum(frontend.cpu_times()[:2])
            children = 0.0
            for child in frontend.children(recursive=True):
                try:
                    children += sum(child.cpu_times()[:2])
                except psutil.Error:
                    continue
            return own, children
        except psutil.Error:
            return None


def _measure(config: BenchConfig, target: Target, requests: list[bytes], spec: LoadSpec,
             progress: Progress | None, view: _ServerView | None = None) -> LevelResult:
    label = f"rate={spec.rate:g}/s" if spec.rate else f"c={spec.concurrency}"
    report = (lambda samples: progress(label, samples)) if progress else None

    def window() -> LevelResult:
        before = view.start() if view else None
        samples = Samples()
        try:
            run_interruptible(run_level_clients(target, requests, spec, config.clients, progress=report,
                                                samples=samples))
        except Interrupted as stop:  # what this level measured so far is kept, marked partial
            partial = replace(summarize(samples, spec.concurrency, spec.rate, config.percentiles), interrupted=True)
            raise _PartialLevel(stop.signum, partial) from None
        result = summarize(samples, spec.concurrency, spec.rate, config.percentiles)
        if view is None or before is None:
            return result
        return replace(result, server_view=view.finish(before, result.requests_ok + result.requests_failed))

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
    complete = [trial for trial in trials if len(trial) == len(trials[0])]
    if len(complete) == 1:
        return complete[0]
    medians = []
    for index in range(len(complete[0])):
        runs = sorted((trial[index] for trial in complete), key=lambda r: r.throughput)
        middle = runs[len(runs) // 2]
        latency = {key: round(statistics.median(r.latency_ms.get(key, 0.0) for r in runs), 3)
                   for key in middle.latency_ms}
        view = dict(middle.server_view) if middle.server_view else None
        for key in ("frontend_cpu_ms_per_request", "worker_cpu_ms_per_request"):
            values = [r.server_view[key] for r in runs if r.server_view and key in r.server_view]
            if view is not None and values:
                view[key] = round(statistics.median(values), 4)
        for stage in STAGE_METRICS:
            means = [r.server_view["handler_ms"][stage]["mean"] for r in runs if r.server_view
                     and "mean" in r.server_view.get("handler_ms", {}).get(stage, {})]
            if view is not None and means and stage in view.get("handler_ms", {}):
                view["handler_ms"] = {**view["handler_ms"],
                                      stage: {**view["handler_ms"][stage], "mean": statistics.median(means)}}
        medians.append(replace(middle, throughput=round(statistics.median(r.throughput for r in runs), 2),
                               latency_ms=latency, server_view=view))
    return medians


def _caught(sig: int, caught: list[int], task: asyncio.Task[Any]) -> None:
    caught.append(sig)
    task.cancel()


def run_interruptible(coroutine: Any) -> Any:
    """Run one level on uvloop; a stop signal cancels it and surfaces as Interrupted.

    Between levels the caller keeps ``raise_interrupted`` as the stop signals' handler."""
    caught: list[int] = []

    async def guarded() -> Any:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, _caught, sig, caught, task)
        try:
            return await coroutine
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)

    try:
        return eventloop.run(guarded())
    except (asyncio.CancelledError, KeyboardInterrupt):
        if caught:
            raise Interrupted(caught[0]) from None
        raise Interrupted(signal.SIGINT) from None
    finally:  # the loop put the default handlers back: ours again, for the time between levels
        for sig in STOP_SIGNALS:
            signal.signal(sig, raise_interrupted)
