"""Where commands write their reports and artifacts, checked before any work starts.

A benchmark that runs for ten minutes and then cannot write its report has lost ten minutes:
every command that writes (bench, optimize, run --log-path) creates and probes its output
places first, and says what is wrong with a path in one line.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from launchkit.core.errors import UsageError


def default_report_dir(name: str | None, base: str = "results") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(base) / f"{stamp}-{name or 'bench'}"


def writable_folder(path: str | Path, flag: str) -> Path:
    """Create ``path`` (and its parents) if needed and prove it takes a file; UsageError otherwise."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{flag} {folder}: this is a file, not a folder; give a folder (it is created if missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".launchkit-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"{flag} {folder}: cannot write there ({error.strerror or error}); give a folder you "
                         "may write to") from None
    return folder


def writable_file(path: str | Path, flag: str) -> Path:
    """A file path whose folder exists (or can be made) and takes files; the file itself is not created."""
    file = Path(path)
    if file.is_dir():
        raise UsageError(f"{flag} {file}: this is a folder; give a file name")
    writable_folder(file.parent if str(file.parent) else Path("."), flag)
    return file
