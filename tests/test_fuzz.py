"""A bounded run of every fuzz target (fuzz/targets.py) from the kept corpus: no parser may raise
anything but launchkit's own error, or take a gigabyte, on any input found in a few seconds.
The long run, with its figures: benchmarks/fuzz.py."""

from __future__ import annotations

import pytest

from fuzz.session import run_target
from fuzz.targets import TARGETS

SECONDS = 3


@pytest.mark.parametrize("target", TARGETS)
def test_no_parser_crashes_under_the_fuzzer(target, tmp_path):
    run = run_target(target, SECONDS, tmp_path)
    assert not run.crashes, f"{target}: {run.crashes} in {tmp_path / 'artifacts'}\n{run.output_tail}"
    assert run.executions > 100 and run.coverage > 10, run.output_tail  # it ran, and reached the parser
