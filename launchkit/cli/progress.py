"""Live progress of a bench run on a terminal: a spinner through the server's start-up steps, then
"level i of n" with requests, rate, recent percentiles, elapsed and remaining time (rich)."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any


class BenchProgress:
    def __init__(self, config: Any) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.spinner import Spinner

        self.config = config
        self.levels = max(len(config.rates) or len(config.concurrency), 1) * config.trials
        self.done_levels = -1  # the level being measured is done_levels + 1 of self.levels
        self.started = time.monotonic()
        self.level_started = self.started
        self.label = ""
        self.spinner = Spinner("dots", text="launchkit bench: preparing")
        self.live = Live(self.spinner, console=Console(stderr=True), refresh_per_second=8, transient=True)

    def __enter__(self) -> "BenchProgress":
        self.live.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.live.__exit__(kind, error, trace)

    def status(self, message: str) -> None:
        if message.startswith("level "):
            self.done_levels += 1
            self.level_started = time.monotonic()
        self.label = message
        self.spinner.update(text=f"launchkit bench: {message}  [{self._clock()}]")

    def level(self, name: str, samples: Any) -> None:
        elapsed = max((samples.completed_at_ns[-1] - samples.started_ns) / 1e9, 1e-9) if samples.ok else 0.0
        recent = sorted(samples.latency_ns[-2000:])
        p50 = recent[len(recent) // 2] / 1e6 if recent else 0.0
        p99 = recent[int(len(recent) * 0.99)] / 1e6 if recent else 0.0
        rate = samples.ok / elapsed if elapsed else 0.0
        self.spinner.update(text=f"launchkit bench: {self.label}: {name}: {samples.ok:,} ok, {samples.failed:,} failed, "
                                 f"{rate:,.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms (recent)  "
                                 f"[{self._clock(rate)}]")

    def _clock(self, rate: float = 0.0) -> str:
        """Elapsed, and an estimate of what is left: levels × their duration, or requests at the current rate."""
        now = time.monotonic()
        elapsed = now - self.started
        left_levels = max(self.levels - self.done_levels - 1, 0)
        in_level = now - self.level_started
        if self.config.duration_s:
            left = max(self.config.duration_s - in_level, 0) + left_levels * self.config.duration_s
        elif rate and self.config.requests:
            per_level = self.config.requests / rate
            left = max(per_level - in_level, 0) + left_levels * per_level
        else:
            return f"{_mmss(elapsed)} elapsed"
        return f"{_mmss(elapsed)} elapsed, about {_mmss(left)} left"


def _mmss(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes:02d}:{seconds:02d}"
