"""`launchkit tune`'s flags, checked once and turned into one of its two searches before anything runs.

``launchkit tune`` searches either the serving configuration of a model (the default) or the
launch recipe of a program that prints its own figure (``--run``). The two share a command and
a few flags (--space, --max-time, --report-dir, --quiet), so the choice between them is made
here, once, and each gets a frozen request with everything already checked: the command only
shows progress and the verdict. Every mistake is a :class:`UsageError` naming the flag.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launchkit.core.errors import UsageError
from launchkit.tune.measure import MeasureSettings
from launchkit.tune.programs import prepare_program
from launchkit.tune.runner import TuneRequest, prepare
from launchkit.tune.search import Constraints

# flags that only a served model's search reads (--run refuses them): flag → parameter name
SERVING_ONLY = (("TARGET", "target"), ("--latency-budget", "latency_budget"), ("--min-throughput", "min_throughput"),
                ("--max-memory", "max_memory"), ("--resume", "resume"), ("--input", "inputs"))
SECONDS_PER_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600}


def parse_duration(text: str, flag: str = "--max-time") -> float:
    """``600``, ``90s``, ``10m`` or ``1h`` → seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise UsageError(f"{flag} {text!r}: expected a positive duration such as 600, 90s, 10m or 1h")
    return float(match.group(1)) * SECONDS_PER_UNIT[match.group(2)]


@dataclass(frozen=True)
class ServingSearch:
    """A checked search of a served model's configurations (the request's target resolved to an archive)."""

    request: TuneRequest
    folder: Path  # the report folder, writable
    resume: Path | None  # --resume: an earlier run's folder (then also ``folder``)


@dataclass(frozen=True)
class ProgramSearch:
    """A checked search of a `launchkit run` program's launch recipes (--run)."""

    program: tuple[str, ...]  # the program's words
    metric: str  # --metric: where its output holds its figure
    cpus: int  # this machine's usable cores
    space: str  # --space, already checked against the cores
    max_time_s: float
    run_timeout_s: float
    folder: Path


def tune_request(flags: Mapping[str, Any]) -> ServingSearch | ProgramSearch:
    """Check ``flags`` (click's values, by parameter name) and build the search they ask for."""
    max_time = parse_duration(flags["max_time"])
    if flags["program"] is not None or flags["metric"] is not None:
        return _program_search(flags, max_time)
    constraints = Constraints(flags["latency_budget"], flags["percentile"], flags["min_throughput"],
                              flags["max_memory"], flags["objective"])
    level_seconds = flags["level_seconds"]
    request = TuneRequest(flags["target"], constraints, flags["mode"], flags["space"], max_time,
                          MeasureSettings(level_seconds=level_seconds, warmup_seconds=min(1.0, level_seconds)),
                          tuple(flags["inputs"]), flags["content_type"])
    resume = Path(flags["resume"]) if flags["resume"] else None
    request, folder = prepare(request, resume, flags["report_dir"])
    return ServingSearch(request, folder, resume)


def _program_search(flags: Mapping[str, Any], max_time: float) -> ProgramSearch:
    given = [flag for flag, name in SERVING_ONLY if flags[name]]
    words, cpus, folder = prepare_program(flags["program"], flags["metric"], flags["space"], flags["report_dir"],
                                          given)
    return ProgramSearch(tuple(words), flags["metric"], cpus, flags["space"], max_time, flags["run_timeout"], folder)
