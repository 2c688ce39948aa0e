"""`launchkit tune --run PROGRAM`: the best `launchkit run` recipe for a program that prints its
own throughput.

Each configuration (instances × allocator × OpenMP runtime; each instance gets its even share of
the cores) runs the program through `launchkit run` with per-instance logs; the figure is read
from each instance's output by ``--metric`` (a regular expression whose first group is the number,
or a JSON key of a line that is a JSON object; the last match counts) and summed over the
instances (throughput adds up across instances). A configuration whose run fails, or whose output
has no figure, is recorded with the reason. Configurations are tried from launchkit run's default
(one instance) outwards, until all are measured or ``--max-time`` is spent.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from itertools import product
from pathlib import Path
from typing import Any

from launchkit.core.errors import UsageError
from launchkit.core.signals import Interrupted, handling, raise_interrupted
from launchkit.launch.spawn import spawn, stop
from launchkit.tune.space import ALLOCATORS, AUTO, Knob, parse_knobs

logger = logging.getLogger(__name__)



RUN_KNOBS = {
    "instances": Knob("instances", int, minimum=1, too_small="values are 1 or more"),
    "allocator": Knob("allocator", choices=ALLOCATORS),
    "omp": Knob("omp", choices=(AUTO, "gnu", "intel")),
}
RUN_HINT = "with --run the knobs are instances, allocator and omp, e.g. 'instances=1,2,4;allocator=auto,jemalloc'"


@dataclass(frozen=True)
class RunConfig:
    instances: int = 1
    allocator: str = AUTO
    omp_runtime: str = AUTO

    def launcher_args(self) -> list[str]:
        """`launchkit run` flags (its defaults, auto, left out)."""
        args = ["--ninstances", str(self.instances)]
        for flag, value in (("--memory-allocator", self.allocator), ("--omp-runtime", self.omp_runtime)):
            if value != AUTO:
                args += [flag, value]
        return args

    def label(self) -> str:
        extras = [f"{name} {value}" for name, value in (("allocator", self.allocator), ("OpenMP", self.omp_runtime))
                  if value != AUTO]
        return ", ".join([f"{self.instances} instance(s)", *extras])


class RunStatus(StrEnum):
    """What became of one run of the program (written as its value in the summary)."""

    PENDING = "pending"
    OK = "ok"
    FAILED = "failed"  # it did not finish in time, or exited with an error
    NO_METRIC = "no-metric"  # it finished, but printed no figure matching --metric


@dataclass
class RunTrial:
    config: RunConfig
    status: RunStatus = RunStatus.PENDING
    total: float | None = None  # the metric summed over instances
    per_instance: list[float] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "label": self.config.label(), "status": self.status,
                "total": self.total, "per_instance": self.per_instance, "seconds": round(self.seconds, 1),
                "error": self.error}


def metric_reader(metric: str) -> Callable[[str], float | None]:
    """The number an instance's output holds: the last match of a regex's first group, or of a JSON key."""
    if re.fullmatch(r"[A-Za-z_][\w.-]*", metric):  # a JSON key
        def from_json(text: str) -> float | None:
            found = None
            for line in text.splitlines():
                line = line.strip()
                if line.startswith("{"):
                    try:
                        value = json.loads(line).get(metric)
                    except (ValueError, AttributeError):
                        continue
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        found = float(value)
            return found
        return from_json
    try:
        pattern = re.compile(metric)
    except re.error as error:
        raise UsageError(f"--metric {metric!r}: not a regular expression ({error})") from None
    if pattern.groups < 1:
        raise UsageError(f"--metric {metric!r}: give the number as the first group, e.g. 'throughput: ([0-9.]+)'")

    def from_regex(text: str) -> float | None:
        matches = pattern.findall(text)
        if not matches:
            return None
        last = matches[-1][0] if isinstance(matches[-1], tuple) else matches[-1]
        try:
            return float(last)
        except ValueError:
            return None
    return from_regex


def run_space(cpus: int, space: str) -> list[RunConfig]:
    """The configurations to try, launchkit run's default first, then by distance from it."""
    values: dict[str, tuple[Any, ...]] = {
        "instances": tuple(value for value in (1, 2, 4, 8, 16, 32, 64, 128) if value <= cpus),
        "allocator": (AUTO, "default", "jemalloc"),
        "omp": (AUTO, "gnu"),
    }
    values.update(parse_knobs(space, RUN_KNOBS, RUN_HINT))
    if any(number > cpus for number in values["instances"]):
        raise UsageError(f"--space instances={','.join(map(str, values['instances']))}: instances go from 1 to the "
                         f"{cpus} usable cores")
    configs = [RunConfig(instances, allocator, omp)
               for instances, allocator, omp in product(values["instances"], values["allocator"], values["omp"])]
    return sorted(configs, key=lambda config: (config.allocator != AUTO) + (config.omp_runtime != AUTO)
                  + abs(config.instances.bit_length() - 1))


def measure_run(config: RunConfig, program: list[str], read: Callable[[str], float | None],
                timeout_s: float) -> RunTrial:
    """Run the program once under ``config`` with `launchkit run` and read its figure."""
    trial = RunTrial(config)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="launchkit-tune-run-") as logs:
        argv = [sys.executable, "-m", "launchkit", "run", *config.launcher_args(), "--log-path", logs, "--", *program]
        # spawned like every child: its own group, stopped as a whole, dead with tune even on SIGKILL
        child = spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _, errors = child.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stop(child, grace_s=5.0)
            trial.status, trial.error = RunStatus.FAILED, f"did not finish within {timeout_s:g} s"
            return trial
        finally:
            trial.seconds = time.monotonic() - started
            if child.poll() is None:  # interrupted: the run goes with us
                stop(child, grace_s=5.0)
        if child.returncode != 0:
            text = errors.decode(errors="replace").strip().splitlines()
            detail = text[-1] if text else f"exit {child.returncode}"
            trial.status, trial.error = RunStatus.FAILED, f"exit {child.returncode}: {detail[:300]}"
            return trial
        outputs = sorted(Path(logs).glob("run.*.out.log"))
        figures = [read(path.read_text(errors="replace")) for path in outputs]
    if not figures or any(figure is None for figure in figures):
        trial.status, trial.error = RunStatus.NO_METRIC, "an instance printed no figure matching --metric"
        return trial
    trial.per_instance = [float(figure) for figure in figures if figure is not None]
    trial.total = sum(trial.per_instance)
    trial.status = RunStatus.OK
    return trial


def prepare_program(program: str | None, metric: str | None, space: str, report_dir: str | None,
                    serving_flags: list[str]) -> tuple[list[str], int, Path]:
    """Everything --run checks before the program first runs: the program and --metric together, no
    serving-only flag (``serving_flags``: those given), the metric's form, the space. The program's
    words, this machine's usable cores and the report folder."""
    from launchkit.core.results import default_report_dir, writable_folder
    from launchkit.tune.runner import machine_cpus

    if not program or not metric:
        raise UsageError("--run 'PROGRAM [ARGS]' and --metric REGEX|KEY go together (the program prints its own "
                         "throughput; --metric says where)")
    if serving_flags:
        raise UsageError(f"{', '.join(serving_flags)}: for tuning a served model, not with --run")
    words = shlex.split(program)
    metric_reader(metric)
    cpus = machine_cpus()
    run_space(cpus, space)
    return words, cpus, writable_folder(report_dir or default_report_dir("tune-run"), "--report-dir")


@dataclass(frozen=True)
class ProgramTuneResult:
    """What `launchkit tune --run` measured; summary.json is :meth:`to_dict`."""

    program: tuple[str, ...]
    metric: str
    cpus: int
    trials: tuple[RunTrial, ...]
    time_up: bool
    interrupted: str | None  # the stop signal's name (SIGINT, SIGTERM, SIGHUP) when one ended the search
    elapsed_s: float

    @property
    def default(self) -> RunTrial | None:
        """launchkit run's default (one instance), when it was measured (it is tried first)."""
        return self.trials[0] if self.trials and self.trials[0].config == RunConfig() else None

    @property
    def best(self) -> RunTrial | None:
        ok = [trial for trial in self.trials if trial.status is RunStatus.OK]
        return max(ok, key=lambda trial: trial.total or 0.0) if ok else None

    @property
    def best_command(self) -> str | None:
        best = self.best
        return shlex.join(["launchkit", "run", *best.config.launcher_args(), "--", *self.program]) if best else None

    def to_dict(self) -> dict[str, Any]:
        default, best = self.default, self.best
        summary: dict[str, Any] = {
            "command": "launchkit tune --run", "program": list(self.program), "metric": self.metric,
            "cpus": self.cpus, "default": default.to_dict() if default else None,
            "best": best.to_dict() if best else None, "trials": [trial.to_dict() for trial in self.trials],
            "time_up": self.time_up, "interrupted": self.interrupted, "elapsed_s": round(self.elapsed_s, 1),
        }
        if best is not None:
            summary["best_command"] = self.best_command
        return summary


def tune_program(program: list[str], metric: str, cpus: int, space: str, max_time_s: float, timeout_s: float,
                 folder: Path, finished: Callable[[RunTrial], None]) -> ProgramTuneResult:
    """Measure the space (or as much as the time allows); writes summary.json and best-command.txt.

    A stop signal (Ctrl-C, SIGTERM, SIGHUP) ends the search as the serving search ends: the run in
    progress is stopped, and what was measured is written."""
    read = metric_reader(metric)
    configs = run_space(cpus, space)
    started = time.monotonic()
    trials: list[RunTrial] = []
    time_up, interrupted = False, None
    try:
        with handling(raise_interrupted):
            for config in configs:
                average = sum(trial.seconds for trial in trials) / max(len(trials), 1)
                if trials and time.monotonic() - started + average > max_time_s:
                    time_up = True
                    break
                trial = measure_run(config, program, read, timeout_s)
                trials.append(trial)
                finished(trial)
    except Interrupted as stop_signal:  # the run in progress was stopped (measure_run's finally)
        interrupted = signal.Signals(stop_signal.signum).name
    result = ProgramTuneResult(tuple(program), metric, cpus, tuple(trials), time_up, interrupted,
                               time.monotonic() - started)
    if result.best_command is not None:
        (folder / "best-command.txt").write_text(result.best_command + "\n")
    (folder / "summary.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result
