"""``launchkit serve --start`` / ``--stop``: the server as a background daemon, TorchServe's way.

Scripts written for TorchServe run ``torchserve --start ... --ts-config config.properties``, use
the server, then ``torchserve --stop``. Here ``--start`` starts the same foreground server as a
detached process (its own session; its output in ``<log dir>/launchkit_serve.log``), records its
pid in a pid file, and returns once it answers ``/ping`` (or fails with the log's tail if it
exits first). ``--stop`` stops the server that file names: SIGTERM (requests in flight finish,
workers stop), SIGKILL to its process group after the grace period. With no server running it
says so and exits 0, as ``torchserve --stop`` does (scripts call it defensively before starting).

This is the one child launchkit starts that must outlive launchkit itself, so it is not started
with :func:`launchkit.launch.spawn.spawn` (whose children die with their parent).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from launchkit.core.errors import LaunchkitError, UsageError

logger = logging.getLogger(__name__)
LOG_NAME = "launchkit_serve.log"


def default_pid_file() -> Path:
    return Path(tempfile.gettempdir()) / ".launchkit_serve.pid"


def default_log_dir() -> Path:
    return Path(os.environ.get("LOG_LOCATION") or "logs")  # TorchServe's variable for its log folder


@dataclass(frozen=True)
class Started:
    pid: int
    log: Path
    pid_file: Path


def running_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process is alive and is a launchkit server; None otherwise."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        import psutil

        command = " ".join(psutil.Process(pid).cmdline())
    except Exception:  # noqa: BLE001 - gone, a zombie, or not ours to inspect: not a running server
        return None
    return pid if "launchkit" in command and "serve" in command else None  # a reused pid is someone else's


def start(argv: list[str], ping_url: str, pid_file: Path, log_dir: Path, timeout_s: float = 600.0) -> Started:
    """Start ``launchkit serve <argv>`` in the background; return once it answers ``ping_url``."""
    existing = running_pid(pid_file)
    if existing is not None:
        raise UsageError(f"launchkit serve is already running (pid {existing}, pid file {pid_file}); stop it with "
                         "launchkit serve --stop, or give this one another --pid-file and addresses")
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / LOG_NAME
    with open(log, "ab") as output:
        process = subprocess.Popen([sys.executable, "-m", "launchkit", "serve", *argv], stdin=subprocess.DEVNULL,
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    pid_file.write_text(f"{process.pid}\n")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            pid_file.unlink(missing_ok=True)
            tail = log.read_text(errors="replace").splitlines()[-15:]
            raise LaunchkitError(f"launchkit serve exited with status {code} while starting; the end of {log}:\n"
                                 + "\n".join(tail))
        try:
            with urllib.request.urlopen(ping_url, timeout=2):
                return Started(process.pid, log, pid_file)
        except urllib.error.HTTPError:  # 500 Unhealthy: up, with a model marked failed; the log says which
            return Started(process.pid, log, pid_file)
        except OSError:
            time.sleep(0.2)
    raise LaunchkitError(f"launchkit serve (pid {process.pid}) did not answer {ping_url} within {timeout_s:g} s; "
                         f"it is still running: see {log}, stop it with launchkit serve --stop")


def stop(pid_file: Path, grace_s: float = 40.0) -> int | None:
    """Stop the server ``pid_file`` names; its pid, or None when none was running."""
    pid = running_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        logger.warning("launchkit serve (pid %d) did not stop within %g s: killing it", pid, grace_s)
        try:
            os.killpg(pid, signal.SIGKILL)  # the daemon leads its own session: workers go with it
        except (ProcessLookupError, PermissionError):
            pass
    pid_file.unlink(missing_ok=True)
    return pid


def _alive(pid: int) -> bool:
    try:
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:  # noqa: BLE001 - gone
        return False
