"""Where commands write their reports by default: ``results/<timestamp>-<name>/``."""

from __future__ import annotations

import time
from pathlib import Path


def default_report_dir(name: str | None, base: str = "results") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(base) / f"{stamp}-{name or 'bench'}"
