"""A bounded run of every fuzz target (fuzz/targets.py) from the kept corpus: no parser may raise
anything but launchkit's own error, or take a gigabyte, on any input found in a few seconds.
The long run, with its figures: benchmarks/fuzz.py."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from fuzz.session import FuzzRun, run_target
from fuzz.targets import TARGETS

SECONDS = 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, FuzzRun]:
    """Every target fuzzed, one per core at a time (each fuzzer is one process on one core)."""
    folder = tmp_path_factory.mktemp("fuzz")
    with ThreadPoolExecutor(max_workers=max(1, len(os.sched_getaffinity(0)))) as pool:
        return dict(zip(TARGETS, pool.map(lambda target: run_target(target, SECONDS, folder), TARGETS)))


@pytest.mark.parametrize("target", TARGETS)
def test_no_parser_crashes_under_the_fuzzer(target: str, runs: dict[str, FuzzRun]) -> None:
    run = runs[target]
    assert not run.crashes, f"{target}: {run.crashes} (kept in pytest's fuzz*/artifacts/{target})\n{run.output_tail}"
    assert run.executions > 100 and run.coverage > 10, run.output_tail  # it ran, and reached the parser
