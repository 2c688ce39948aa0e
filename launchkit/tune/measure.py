"""Measuring one configuration: serve it (reusing the running server where a rescale will do),
then bracket the concurrency with bench's load generator.

Concurrency starts at what the configuration can hold at once (workers × streams × batch, seed
002's rule halved: the batcher fills a batch from the queue) and doubles while throughput grows by
``GAIN`` or more; when a level breaks the latency budget, a binary search between the last level
within it and that one finds the boundary. A server whose model cannot load, or that exits, fails
the trial and is stopped; the search goes on.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from launchkit.bench.loadgen import LoadSpec, run_level
from launchkit.bench.requests import Payload, Target, encode_requests
from launchkit.bench.runner import run_interruptible
from launchkit.bench.server import ServerUnderTest
from launchkit.bench.stats import DEFAULT_PERCENTILES, summarize
from launchkit.core.errors import LaunchkitError
from launchkit.tune.search import Constraints, Level, Trial, TrialStatus, judge
from launchkit.tune.space import ServingConfig

logger = logging.getLogger(__name__)

GAIN = 0.05  # raising the concurrency must gain this much throughput to go on
MAX_CONCURRENCY = 512
BISECTION_STEPS = 3


@dataclass(frozen=True)
class MeasureSettings:
    level_seconds: float = 3.0
    warmup_seconds: float = 1.0
    plateau_steps: int = 2  # doublings in a row that gain less than GAIN end the raise
    timeout_s: float = 30.0


class Servers:
    """The one `launchkit serve` tune keeps running; a configuration that differs from the running
    one only in its worker count is applied with the management API (PUT min_worker) instead."""

    def __init__(self, archives: dict[str, Path], logs: Path) -> None:
        self.archives = archives  # variant → archive
        self.logs = logs
        self.server: ServerUnderTest | None = None
        self.key: tuple[object, ...] | None = None
        self.count = 0

    def serve(self, config: ServingConfig, status: Callable[[str], None]) -> bool:
        """Make the running server serve ``config``; True when an existing server was rescaled."""
        if self.server is not None and self.key == config.server_key() and self.server.proc.poll() is None:
            status(f"rescaling to {config.workers} worker(s)")
            self._rescale(config.workers)
            self.server.wait_ready(status=status)
            return True
        self.stop()
        self.count += 1
        log = self.logs / f"server-{self.count}.log"
        status("starting launchkit serve")
        self.server = ServerUnderTest(self.archives[config.variant], config.serve_args(), log)
        self.key = config.server_key()
        self.server.wait_ready(status=status)
        return False

    def _rescale(self, workers: int) -> None:
        assert self.server is not None and self.server.model is not None
        query = urllib.parse.urlencode({"min_worker": workers, "max_worker": workers, "synchronous": "true",
                                        "timeout": 180})
        request = urllib.request.Request(f"{self.server.management_url}/models/{self.server.model}?{query}",
                                         method="PUT")
        try:
            with urllib.request.urlopen(request, timeout=200) as response:
                response.read()
        except urllib.error.HTTPError as error:
            raise LaunchkitError(f"rescaling to {workers} workers failed (HTTP {error.code}): "
                                 f"{error.read().decode(errors='replace')[:300]}") from None
        deadline = time.time() + 180
        while time.time() < deadline:  # synchronous: ready on return; checked, in case a worker is replaced
            described = self.server.describe() or {}
            ready = [w for w in described.get("workers", []) if w.get("status") == "READY"]
            if len(ready) == workers and len(described.get("workers", [])) == workers:
                return
            time.sleep(0.05)
        raise LaunchkitError(f"rescaling to {workers} workers: not ready after 180 s (log: {self.server.log})")

    def memory_mib(self) -> float | None:
        """Resident memory of the server and its workers."""
        import psutil

        if self.server is None:
            return None
        try:
            process = psutil.Process(self.server.proc.pid)
            tree = [process, *process.children(recursive=True)]
            return sum(member.memory_info().rss for member in tree) / 2**20
        except psutil.Error:
            return None

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.server, self.key = None, None


class _Load:
    """Bench's load generator against the running server's model, one level at a time."""

    def __init__(self, servers: Servers, payloads: list[Payload], constraints: Constraints,
                 settings: MeasureSettings, status: Callable[[str], None]) -> None:
        assert servers.server is not None and servers.server.model is not None
        self.target = Target.from_url(f"{servers.server.url}/predictions/{servers.server.model}")
        self.requests = encode_requests(self.target, payloads)
        self.percentiles = tuple(sorted({*DEFAULT_PERCENTILES, constraints.percentile}))
        self.settings, self.status = settings, status

    def warm(self, concurrency: int) -> None:
        self.status("warming up")
        spec = LoadSpec(concurrency=concurrency, duration_s=self.settings.warmup_seconds,
                        timeout_s=self.settings.timeout_s)
        run_interruptible(run_level(self.target, self.requests, spec, record=False))

    def level(self, concurrency: int, seconds: float) -> Level:
        self.status(f"c={concurrency}, {seconds:g} s")
        spec = LoadSpec(concurrency=concurrency, duration_s=seconds, timeout_s=self.settings.timeout_s)
        samples = run_interruptible(run_level(self.target, self.requests, spec))
        summary = summarize(samples, concurrency, None, self.percentiles)
        return Level(concurrency, summary.throughput, summary.latency_ms, summary.requests_failed)


def measure_trial(config: ServingConfig, servers: Servers, payloads: list[Payload], constraints: Constraints,
                  settings: MeasureSettings, status: Callable[[str], None]) -> Trial:
    """Serve ``config`` and find its best concurrency within the constraints (never raises for the
    configuration's own failures: they become the trial's status)."""
    trial = Trial(config)
    started = time.monotonic()
    try:
        trial.reused_server = servers.serve(config, status)
        load = _Load(servers, payloads, constraints, settings, status)

        def level(concurrency: int) -> Level:
            trial.levels.append(load.level(concurrency, settings.level_seconds))
            return trial.levels[-1]

        first = max(1, config.workers * config.streams * max(config.batch_size // 2, 1))
        load.warm(first)
        bracket(level, first, constraints, settings.plateau_steps)
        trial.memory_mib = servers.memory_mib()
        judge(trial, constraints)
        if trial.chosen is not None and trial.chosen.failed:
            trial.status, trial.error = TrialStatus.FAILED, f"{trial.chosen.failed} requests failed"
    except LaunchkitError as error:
        trial.status, trial.error = TrialStatus.FAILED, str(error).splitlines()[0][:500]
        logger.info("configuration %s failed: %s", config.label(), trial.error)
        servers.stop()
    finally:
        trial.seconds = time.monotonic() - started
    return trial


def confirm_trial(trial: Trial, servers: Servers, payloads: list[Payload], constraints: Constraints,
                  settings: MeasureSettings, status: Callable[[str], None]) -> Trial:
    """Measure the trial's chosen level again, twice as long, on a server started afresh (a short
    level can be lucky); the trial is judged again with the confirmation as its figure."""
    assert trial.chosen is not None
    concurrency = trial.chosen.concurrency
    try:
        servers.stop()
        servers.serve(trial.config, status)
        load = _Load(servers, payloads, constraints, settings, status)
        load.warm(concurrency)
        trial.confirmed = load.level(concurrency, 2 * settings.level_seconds)
    except LaunchkitError as error:
        trial.status, trial.error = TrialStatus.FAILED, f"confirmation: {str(error).splitlines()[0][:400]}"
        servers.stop()
        return trial
    return judge(trial, constraints)


def bracket(level: Callable[[int], Level], first: int, constraints: Constraints, plateau_steps: int) -> None:
    """Raise the concurrency from ``first`` by doubling until throughput stops growing (or a level
    fails or breaks the budget), then bisect toward the budget boundary."""
    concurrency, best, flat = first, 0.0, 0
    within: Level | None = None
    broken: Level | None = None
    while concurrency <= MAX_CONCURRENCY:
        measured = level(concurrency)
        if measured.failed:
            return
        if not measured.within_budget(constraints):
            broken = measured
            break
        within = measured
        if measured.throughput_rps >= best * (1 + GAIN):
            flat = 0
        else:
            flat += 1
            if flat >= plateau_steps:
                return
        best = max(best, measured.throughput_rps)
        concurrency *= 2
    if broken is None:
        return
    # the boundary lies between the last level within the budget (or none: 0) and the first beyond it
    low, high = within.concurrency if within else 0, broken.concurrency
    for _ in range(BISECTION_STEPS + (0 if within else 2)):
        middle = (low + high) // 2
        if middle <= low:
            return
        measured = level(middle)
        if measured.failed:
            return
        if measured.within_budget(constraints):
            low = middle
        else:
            high = middle


def trial_line(trial: Trial, constraints: Constraints) -> str:
    """One line for the log and the progress: what it reached, or why not."""
    if trial.chosen is None:
        return f"{trial.config.label()}: {trial.status}" + (f" ({trial.error})" if trial.error else "")
    chosen = trial.chosen
    return (f"{trial.config.label()}: {chosen.throughput_rps:,.1f} req/s at c={chosen.concurrency}, "
            f"{constraints.key} {chosen.percentile_ms(constraints):.2f} ms ({trial.status})")

