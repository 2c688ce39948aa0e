"""Shared helpers of the benchmark scripts: a results folder, tables, verdicts, a JSON dump.

Every target a script checks becomes a :class:`Check` computed from the numbers measured in that
run: met or not met, with the ratio and the target as the issue stated it. A scenario whose load
had errors (non-2xx answers, failed requests) is "failed", never met, and makes the script exit 1.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


def results_dir(name: str, base: str = "results") -> Path:
    path = Path(base) / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def git_revision() -> str | None:
    """This checkout's commit; ``LAUNCHKIT_GIT_REVISION`` where the checkout travelled without its history."""
    if os.environ.get("LAUNCHKIT_GIT_REVISION"):
        return os.environ["LAUNCHKIT_GIT_REVISION"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class Check:
    """One target, decided from one run's numbers."""

    scenario: str
    metric: str
    ours: float
    target: str  # as the issue states it, e.g. "≥ 4× TorchServe", "≤ 3 ms"
    met: bool
    peer: float | None = None  # the peer's figure, measured live in the same run
    ratio: float | None = None  # ours ÷ peer
    errors: int = 0  # failed requests in this scenario's load (ours or the peer's)
    note: str = ""
    peer_name: str = ""

    @property
    def verdict(self) -> str:
        if self.errors:
            return f"failed: {self.errors} error(s) in the load"
        return "met" if self.met else "not met"


def relative(scenario: str, metric: str, ours: float, peer: float | None, factor: float, *, higher: bool,
             errors: int = 0, peer_name: str = "TorchServe", note: str = "") -> Check:
    """``ours`` at least (``higher``) or at most ``factor`` × the peer's figure."""
    words = f"{'≥' if higher else '≤'} {_factor(factor)}× {peer_name}"
    if peer is None or peer != peer or peer == 0:  # no peer figure (nan or missing): cannot be decided
        return Check(scenario, metric, ours, words, False, peer, None, errors, note or f"no {peer_name} figure",
                     peer_name)
    ratio = ours / peer
    return Check(scenario, metric, ours, words, ratio >= factor if higher else ratio <= factor, peer, ratio, errors,
                 note, peer_name)


def absolute(scenario: str, metric: str, ours: float, bound: float, unit: str, *, higher: bool,
             peer: float | None = None, errors: int = 0, note: str = "", peer_name: str = "TorchServe") -> Check:
    """``ours`` at least (``higher``) or at most ``bound``; the peer's figure shown beside it."""
    ratio = ours / peer if peer else None
    return Check(scenario, metric, ours, f"{'≥' if higher else '≤'} {bound:g}{unit}",
                 ours >= bound if higher else ours <= bound, peer, ratio, errors, note, peer_name if peer else "")


def _factor(value: float) -> str:
    if value < 1 and abs(1 / value - round(1 / value)) < 1e-9:
        return f"1/{round(1 / value)}"
    return f"{value:g}"


def verdict_table(checks: list[Check]) -> str:
    rows = [[check.scenario, check.metric, _number(check.ours),
             f"{check.peer_name}: {_number(check.peer)}" if check.peer_name and check.peer is not None else "-",
             "-" if check.ratio is None else f"{check.ratio:.2f}", check.target, f"**{check.verdict}**"
             + (f" ({check.note})" if check.note else "")] for check in checks]
    return markdown_table(["scenario", "metric", "launchkit", "peer (measured live, same run)", "ratio", "target",
                           "verdict"], rows)


def _number(value: float | None) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


def machine_line() -> str:
    from launchkit.core.isa import read_isa

    isa = read_isa("/")
    return (f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, {len(os.sched_getaffinity(0))} CPUs "
            f"({isa.model or 'unknown CPU'}), git {git_revision() or '-'}")


def write(folder: Path, title: str, table: str, data: dict[str, Any], checks: list[Check] = ()) -> int:
    """Write report.md and summary.json, print the report; returns the exit status (1: a load had errors)."""
    when = machine_line()
    data = {"machine": platform.node(), "cpus": len(os.sched_getaffinity(0)), "git": git_revision(), "when": when,
            "checks": [asdict(check) | {"verdict": check.verdict} for check in checks], **data}
    parts = [f"# {title}", "", when, ""]
    if checks:
        parts += [verdict_table(checks), ""]
    if table:
        parts += [table, ""]
    text = "\n".join(parts)
    (folder / "report.md").write_text(text)
    (folder / "summary.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"\n{text}\nwritten to {folder}/")
    return 1 if any(check.errors for check in checks) else 0
