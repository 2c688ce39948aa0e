"""Constraints, trials, the objective and the two search orders (quick, brute). Pure.

Quick mode climbs from the default configuration like Model Analyzer's quick mode, after measuring
one seed beside it (one worker per core: see space.seed_points): it measures the best configuration's neighbours (one knob one step away, in the space's order), so each new
best moves the climb; at a peak it goes on from the runner-ups while time remains. Brute mode
measures every configuration of the space.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from launchkit.tune.space import SearchSpace, ServingConfig


@dataclass(frozen=True)
class Constraints:
    latency_budget_ms: float | None = None  # on the chosen percentile
    percentile: float = 99.0
    min_throughput: float | None = None
    max_memory_mib: float | None = None
    objective: str = "throughput"  # or "latency"

    @property
    def key(self) -> str:
        """The percentile's key in bench's latency summaries (p99, p99.9)."""
        return f"p{self.percentile:g}"


@dataclass(frozen=True)
class Level:
    """One measured concurrency level of a configuration."""

    concurrency: int
    throughput_rps: float
    latency_ms: dict[str, float]
    failed: int = 0

    def percentile_ms(self, constraints: Constraints) -> float:
        return self.latency_ms.get(constraints.key, self.latency_ms.get("p99", 0.0))

    def within_budget(self, constraints: Constraints) -> bool:
        return not self.failed and (constraints.latency_budget_ms is None
                                    or self.percentile_ms(constraints) <= constraints.latency_budget_ms)


class TrialStatus(StrEnum):
    """What became of a serving configuration (written as its value in trials.jsonl and the reports)."""

    PENDING = "pending"
    OK = "ok"  # within every constraint
    OVER_BUDGET = "over-budget"
    BELOW_MIN_THROUGHPUT = "below-min-throughput"
    OVER_MEMORY = "over-memory"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


@dataclass
class Trial:
    """A configuration and what became of it: its chosen level, every level it measured, or why it failed."""

    config: ServingConfig
    status: TrialStatus = TrialStatus.PENDING
    levels: list[Level] = field(default_factory=list)
    chosen: Level | None = None
    memory_mib: float | None = None
    error: str | None = None
    seconds: float = 0.0
    reused_server: bool = False
    confirmed: Level | None = None  # the chosen level measured again, longer, after the search

    @property
    def feasible(self) -> bool:
        return self.status is TrialStatus.OK and self.chosen is not None

    def to_dict(self, constraints: Constraints) -> dict[str, Any]:
        chosen = self.chosen
        row: dict[str, Any] = {"config": self.config.to_dict(), "label": self.config.label(), "status": self.status,
                               "concurrency": chosen.concurrency if chosen else None,
                               "throughput_rps": round(chosen.throughput_rps, 2) if chosen else None,
                               "p99_ms": round(chosen.latency_ms.get("p99", 0.0), 3) if chosen else None,
                               "memory_mib": round(self.memory_mib, 1) if self.memory_mib is not None else None,
                               "error": self.error, "seconds": round(self.seconds, 1),
                               "reused_server": self.reused_server, "levels": [asdict(level) for level in self.levels],
                               "confirmed": asdict(self.confirmed) if self.confirmed else None}
        if chosen:
            row[f"{constraints.key}_ms"] = round(chosen.percentile_ms(constraints), 3)
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Trial:
        levels = [Level(**level) for level in row.get("levels", [])]
        chosen = next((level for level in levels if level.concurrency == row.get("concurrency")), None)
        confirmed = Level(**row["confirmed"]) if row.get("confirmed") else None
        return cls(ServingConfig.from_dict(row["config"]), TrialStatus(row["status"]), levels, chosen, row.get("memory_mib"),
                   row.get("error"), row.get("seconds", 0.0), row.get("reused_server", False), confirmed)


def choose_level(levels: list[Level], constraints: Constraints) -> Level | None:
    """The level a configuration is judged by: the best within the budget (highest throughput, or
    lowest latency for the latency objective); None when no level is within it."""
    within = [level for level in levels if level.within_budget(constraints)]
    if not within:
        return None
    if constraints.objective == "latency":
        fast_enough = [level for level in within if constraints.min_throughput is None
                       or level.throughput_rps >= constraints.min_throughput] or within
        return min(fast_enough, key=lambda level: level.percentile_ms(constraints))
    return max(within, key=lambda level: level.throughput_rps)


def judge(trial: Trial, constraints: Constraints) -> Trial:
    """Set the trial's chosen level and status from its levels and the constraints."""
    if trial.status in (TrialStatus.FAILED, TrialStatus.INTERRUPTED) and not trial.levels:
        return trial
    trial.chosen = choose_level(trial.levels, constraints)
    if trial.chosen is not None and trial.confirmed is not None:
        # measured again, longer: the confirmation is the figure, and it must hold the budget too
        trial.chosen = trial.confirmed if trial.confirmed.within_budget(constraints) else None
    if trial.chosen is None:
        trial.status = TrialStatus.OVER_BUDGET
        # the closest: the level nearest the budget, for the report
        trial.chosen = min(trial.levels, key=lambda level: level.percentile_ms(constraints)) if trial.levels else None
        return trial
    if constraints.min_throughput is not None and trial.chosen.throughput_rps < constraints.min_throughput:
        trial.status = TrialStatus.BELOW_MIN_THROUGHPUT
    elif constraints.max_memory_mib is not None and trial.memory_mib is not None \
            and trial.memory_mib > constraints.max_memory_mib:
        trial.status = TrialStatus.OVER_MEMORY
    else:
        trial.status = TrialStatus.OK
    return trial


def score(trial: Trial, constraints: Constraints) -> float:
    """Higher is better; only feasible trials are compared."""
    assert trial.chosen is not None
    if constraints.objective == "latency":
        return -trial.chosen.percentile_ms(constraints)
    return trial.chosen.throughput_rps


def best_of(trials: list[Trial], constraints: Constraints) -> Trial | None:
    feasible = [trial for trial in trials if trial.feasible]
    return max(feasible, key=lambda trial: score(trial, constraints)) if feasible else None


def next_to_confirm(trials: list[Trial], constraints: Constraints, leaders: int) -> Trial | None:
    """The next trial to measure again after the search, or None: the ``leaders`` best feasible
    trials, and then, while the best feasible trial was never confirmed (a confirmed leader fell out
    of the budget on its longer measurement), that one, so that the best reported is always a
    confirmed figure and never a short measurement's luck."""
    unconfirmed = [trial for trial in trials if trial.feasible and trial.confirmed is None]
    if not unconfirmed:
        return None
    best = best_of(trials, constraints)
    if sum(trial.confirmed is not None for trial in trials) < leaders or (best is not None and best.confirmed is None):
        return max(unconfirmed, key=lambda trial: score(trial, constraints))
    return None


def closest(trials: list[Trial], constraints: Constraints) -> Trial | None:
    """When nothing is feasible: the trial nearest to it (lowest latency among those that answered)."""
    answered = [trial for trial in trials if trial.chosen is not None]
    return min(answered, key=lambda trial: trial.chosen.percentile_ms(constraints)) if answered else None  # type: ignore[union-attr]


def pareto_front(trials: list[Trial], constraints: Constraints) -> list[Trial]:
    """Trials no other trial beats on both throughput and latency (the chosen percentile)."""
    points = [trial for trial in trials if trial.chosen is not None and trial.status is not TrialStatus.FAILED]
    front = []
    for trial in points:
        assert trial.chosen is not None
        mine = (trial.chosen.throughput_rps, trial.chosen.percentile_ms(constraints))
        dominated = any(other.chosen.throughput_rps >= mine[0] and other.chosen.percentile_ms(constraints) <= mine[1]  # type: ignore[union-attr]
                        and (other.chosen.throughput_rps, other.chosen.percentile_ms(constraints)) != mine  # type: ignore[union-attr]
                        for other in points)
        if not dominated:
            front.append(trial)
    return sorted(front, key=lambda trial: trial.chosen.throughput_rps)  # type: ignore[union-attr]


class QuickSearch:
    """Hill-climbing from ``start``: ``next_config`` gives what to measure, ``record`` what it gave.

    The climb expands the best configuration so far: its unmeasured neighbours, nearest knobs
    first. When every neighbour of the best is measured (a peak), and time remains, it goes on
    from the runner-up's neighbours, and so on down the ranking, so that one lucky measurement
    or a local peak does not end the search while the clock still allows more.
    """

    def __init__(self, space: SearchSpace, start: ServingConfig, constraints: Constraints,
                 seeds: tuple[ServingConfig, ...] = ()) -> None:
        self.space, self.constraints = space, constraints
        self.start = start
        self.seeds = seeds  # measured right after the start, before the climb (space.seed_points)
        self.measured: dict[ServingConfig, Trial] = {}

    def record(self, trial: Trial) -> None:
        self.measured[trial.config] = trial

    @property
    def current(self) -> Trial | None:
        """The best configuration so far (the nearest to the budget while none is within it)."""
        ranked = self._ranked()
        return ranked[0] if ranked else None

    def _ranked(self) -> list[Trial]:
        feasible = [trial for trial in self.measured.values() if trial.feasible]
        if feasible:
            return sorted(feasible, key=lambda trial: -score(trial, self.constraints))
        answered = [trial for trial in self.measured.values() if trial.chosen is not None and trial.status is not TrialStatus.FAILED]
        return sorted(answered, key=lambda trial: trial.chosen.percentile_ms(self.constraints))  # type: ignore[union-attr]

    def next_config(self) -> ServingConfig | None:
        for config in (self.start, *self.seeds):
            if config not in self.measured:
                return config
        ranked = self._ranked()
        if not ranked:  # nothing answered at all: try what is nearest the start
            ranked = [self.measured[self.start]]
        for trial in ranked:
            neighbours = self.space.neighbours(trial.config)
            if not trial.feasible:  # toward lower latency first: shorter waits, smaller batches, more workers
                neighbours.sort(key=lambda config: (config.delay_ms, config.batch_size, -config.workers))
            found = next((config for config in neighbours if config not in self.measured), None)
            if found is not None:
                return found
        return None


class BruteSearch:
    """Every configuration of the space, the start first, then grouped so that configurations that
    differ only in their worker count follow each other (the running server is rescaled, not restarted)."""

    def __init__(self, space: SearchSpace, start: ServingConfig, constraints: Constraints) -> None:
        rest = sorted((config for config in space.every() if config != start),
                      key=lambda config: (config.server_key() != start.server_key(), str(config.server_key()),
                                          config.workers))
        self.order = [start, *rest]
        self.measured: dict[ServingConfig, Trial] = {}

    def record(self, trial: Trial) -> None:
        self.measured[trial.config] = trial

    def next_config(self) -> ServingConfig | None:
        return next((config for config in self.order if config not in self.measured), None)
