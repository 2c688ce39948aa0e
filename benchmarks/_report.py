"""Shared helpers of the benchmark scripts: a results folder, a markdown table, a JSON dump."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any


def results_dir(name: str, base: str = "results") -> Path:
    path = Path(base) / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def git_revision() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write(folder: Path, title: str, table: str, data: dict[str, Any]) -> None:
    data = {"machine": platform.node(), "cpus": len(__import__("os").sched_getaffinity(0)),
            "git": git_revision(), **data}
    (folder / "report.md").write_text(f"# {title}\n\n{table}\n")
    (folder / "summary.json").write_text(json.dumps(data, indent=2) + "\n")
    print(f"\n{title}\n\n{table}\n\nwritten to {folder}/")
