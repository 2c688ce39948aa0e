"""Starting a child process the one way launchkit starts every child, and stopping it as a tree.

Every child (a `launchkit run` instance, a server's worker, the server bench starts, the tests'
servers) is started with:

* an argv list, never ``sh -c``;
* its own session and process group, so a signal to the group reaches everything it started;
* ``PR_SET_PDEATHSIG=SIGKILL``, so it dies with the process that started it, even when that one
  is SIGKILLed (nothing is left running under PID 1);
* its CPU affinity set between fork and exec when CPUs are given (the plan never holds a CPU
  outside the caller's mask, so nothing widens).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # a large import `launchkit run` never uses (benchmarks/startup.py measures its start)
    import asyncio

_PR_SET_PDEATHSIG = 1


def child_setup(cpus: Sequence[int] | None) -> Callable[[], None]:
    """The function the child runs between fork and exec (prepared before the fork)."""
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    parent = os.getpid()
    cpu_set = set(cpus) if cpus is not None else None

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
        if cpu_set is not None:
            os.sched_setaffinity(0, cpu_set)

    return setup


def spawn(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cpus: Sequence[int] | None = None,
          stdin: int | IO[Any] | None = None, stdout: int | IO[Any] | None = None,
          stderr: int | IO[Any] | None = None, cwd: str | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` as a child in its own group that dies with this process (see the module)."""
    return subprocess.Popen(list(argv), env=dict(env) if env is not None else None, stdin=stdin, stdout=stdout,
                            stderr=stderr, cwd=cwd, start_new_session=True, preexec_fn=child_setup(cpus))


async def spawn_async(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                      cpus: Sequence[int] | None = None, stdin: int | None = subprocess.DEVNULL,
                      stdout: int | None = None, stderr: int | None = None,
                      pass_fds: Sequence[int] = ()) -> asyncio.subprocess.Process:
    """:func:`spawn` for an asyncio program (the server's workers); ``pass_fds`` stay open in the child."""
    import asyncio

    return await asyncio.create_subprocess_exec(
        *argv, env=dict(env) if env is not None else None, stdin=stdin, stdout=stdout, stderr=stderr,
        start_new_session=True, preexec_fn=child_setup(cpus), pass_fds=tuple(pass_fds))


def signal_group(pid: int, sig: int) -> bool:
    """Send ``sig`` to the process group a spawned child leads; False if it is gone already."""
    try:
        os.killpg(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def stop(process: subprocess.Popen[bytes], grace_s: float = 30.0, sig: int = signal.SIGTERM) -> int:
    """Ask a spawned child to stop (``sig`` to its group), SIGKILL the group after ``grace_s``; its status."""
    if process.poll() is None:
        signal_group(process.pid, sig)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    signal_group(process.pid, signal.SIGKILL)  # the child's own children, too
    return process.wait()
