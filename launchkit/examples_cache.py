"""Where the bundled example archives are built (no torch import here)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(version: str) -> Path:
    base = os.environ.get("LAUNCHKIT_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                             os.path.expanduser("~/.cache"), "launchkit")
    return Path(base) / "examples" / version
