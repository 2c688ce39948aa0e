"""The bundled example archives, built once into a cache (in a child process: no torch here)."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

from launchkit.core.errors import LaunchkitError

logger = logging.getLogger(__name__)
HERE = Path(__file__).parent


def cache_dir(version: str) -> Path:
    base = os.environ.get("LAUNCHKIT_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                             os.path.expanduser("~/.cache"), "launchkit")
    return Path(base) / "examples" / version


def sources_digest() -> str:
    """A digest of the examples' sources: a cache built from other sources is not reused."""
    digest = hashlib.sha256()
    for path in sorted(HERE.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def ensure_examples(names: tuple[str, ...] = ("tiny", "resnet18")) -> list[Path]:
    """Paths of the named example archives, building the missing ones (takes a few seconds once)."""
    from launchkit import __version__

    folder = cache_dir(f"{__version__}-{sources_digest()}")
    wanted = [folder / f"{name}.mar" for name in names]
    missing = [path.stem for path in wanted if not path.exists()]
    if missing:
        logger.info("building the bundled example(s) %s into %s ...", ", ".join(missing), folder)
        folder.mkdir(parents=True, exist_ok=True)
        result = subprocess.run([sys.executable, "-m", "launchkit.examples.build", "--export-path", str(folder),
                                 *missing], capture_output=True, text=True)
        if result.returncode != 0:
            raise LaunchkitError(f"building the bundled examples failed:\n{result.stderr[-2000:]}")
    return wanted
