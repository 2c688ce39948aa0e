"""One bounded fuzzing run of a target, in a child process, and what it found (for the suite's short
runs and benchmarks/fuzz.py's long ones)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
RSS_LIMIT_MB = 1024  # a parser that needs more for one input of at most 4 KiB has a bug (found twice so far)


@dataclass(frozen=True)
class FuzzRun:
    target: str
    seconds: float
    executions: int
    coverage: int  # libFuzzer's "cov": instrumented edges of launchkit's parsers reached
    corpus: int  # inputs kept (seeds + new)
    crashes: tuple[str, ...]  # saved inputs (crash-, oom-, timeout-), empty when none
    output_tail: str


def run_target(target: str, seconds: int, workdir: Path, python: str = sys.executable) -> FuzzRun:
    """Fuzz ``target`` for ``seconds`` from the repository's corpus; new inputs and crashes go under ``workdir``."""
    corpus = workdir / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts = workdir / "artifacts" / target
    artifacts.mkdir(parents=True, exist_ok=True)
    command = [python, "-W", "ignore", str(HERE / "run.py"), target, f"-max_total_time={seconds}",
               f"-rss_limit_mb={RSS_LIMIT_MB}", "-timeout=10", f"-dict={HERE / 'json.dict'}",
               f"-artifact_prefix={artifacts}/", "-print_final_stats=1", str(corpus), str(HERE / "corpus" / target)]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=seconds + 120)
    output = done.stdout + done.stderr
    finished = re.findall(r"#(\d+)\s+DONE\s+cov: (\d+) ft: \d+ corp: (\d+)", output)
    last = re.findall(r"#(\d+)\s+\w+\s+cov: (\d+) ft: \d+ corp: (\d+)", output)
    executions, coverage, kept = (finished or last or [("0", "0", "0")])[-1]
    runs = re.search(r"stat::number_of_executed_units: (\d+)", output)
    return FuzzRun(target, round(time.monotonic() - started, 1), int(runs.group(1)) if runs else int(executions),
                   int(coverage), int(kept), tuple(sorted(path.name for path in artifacts.iterdir())),
                   output[-4000:])
