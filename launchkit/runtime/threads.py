"""Threads on pools: :class:`pin` (the calling thread) and :class:`Task` (a thread of its own).

How a thread is put on a pool: its own affinity (``sched_setaffinity(0, ...)`` affects only the
calling thread on Linux), its OpenMP thread count (``torch.set_num_threads`` is per calling
thread), and its OpenMP team. A team's threads are made once, with the affinity their thread had
then, and are reused: a thread that ran on pool A and is pinned to pool B would still compute on
A's cores. So the team is rebound explicitly: an empty parallel region of the pool's size, whose
body (a ctypes callback) moves each team thread onto the pool. The same rebinding overrides any
placement ``OMP_PROC_BIND``/``OMP_PLACES``/``KMP_AFFINITY`` made from the process's mask (which
`launchkit run` sets for an instance's single team), so the two can meet in one process.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import ctypes
import functools
import logging
import os
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any

from launchkit.runtime.pool import CPUPool

logger = logging.getLogger(__name__)
_OMP_LIBRARIES = ("libgomp", "libiomp5", "libomp")


class Future(concurrent.futures.Future):
    """A task's result; ``get()`` as in IPEX (``result()`` works too)."""

    def get(self, timeout: float | None = None) -> Any:
        return self.result(timeout)


@functools.lru_cache(maxsize=1)
def _openmp() -> Any:
    """The OpenMP runtime torch runs on (already loaded; found in the process's mappings), or None."""
    import torch  # noqa: F401 - loads the runtime

    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if any(name in line for name in _OMP_LIBRARIES)}
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)
            library.GOMP_parallel  # noqa: B018 - GNU's entry point; Intel's and LLVM's runtimes export it too
            return library
        except (OSError, AttributeError):
            continue
    return None


_REGION = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_libc = ctypes.CDLL(None, use_errno=True)


def _bind_team(cpus: list[int]) -> None:
    """Run an empty parallel region of ``len(cpus)`` threads whose body pins each team thread to ``cpus``."""
    runtime = _openmp()
    if runtime is None or len(cpus) < 2:
        return
    mask = set(cpus)

    def body(_: Any) -> None:
        os.sched_setaffinity(0, mask)

    callback = _REGION(body)
    runtime.GOMP_parallel(callback, None, ctypes.c_uint(len(cpus)), ctypes.c_uint(0))


def _enter(cpus: list[int]) -> None:
    import torch

    os.sched_setaffinity(0, set(cpus))
    torch.set_num_threads(len(cpus))
    _bind_team(cpus)


class pin:  # noqa: N801 - IPEX's name
    """Run the calling thread and its OpenMP team on ``cpu_pool``: a context manager or a decorator.

    Nestable: leaving restores the thread's previous cores and thread count (and rebinds its team)."""

    def __init__(self, cpu_pool: CPUPool) -> None:
        if not isinstance(cpu_pool, CPUPool):
            raise TypeError(f"pin takes a CPUPool, got {type(cpu_pool).__name__}")
        self.cpu_pool = cpu_pool
        self._saved = threading.local()

    def __enter__(self) -> "pin":
        import torch

        stack = self._saved.__dict__.setdefault("stack", [])
        stack.append((sorted(os.sched_getaffinity(0)), torch.get_num_threads()))
        _enter(self.cpu_pool.core_ids)
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        cpus, threads = self._saved.stack.pop()
        os.sched_setaffinity(0, set(cpus))
        torch.set_num_threads(threads)
        _bind_team(cpus[:threads] if threads <= len(cpus) else cpus)

    def __call__(self, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def pinned(*args: Any, **kwargs: Any) -> Any:
            with self:
                return function(*args, **kwargs)

        return pinned


_live: "weakref.WeakSet[_PinnedThread]" = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    """End every pinned thread before the interpreter does: a daemon thread torn down at
    finalization while torch's thread-local state lives can abort the process."""
    threads = list(_live)
    for thread in threads:
        thread.stop()
    for thread in threads:
        thread.thread.join(timeout=5)


class _PinnedThread:
    """One daemon thread on a pool, running submitted calls in order; threads given one ``jobs``
    queue share its calls, each taking the next one when it is free."""

    def __init__(self, cpus: list[int], name: str, jobs: "queue.SimpleQueue[Any] | None" = None) -> None:
        self.cpus = cpus
        self.jobs: queue.SimpleQueue[Any] = jobs if jobs is not None else queue.SimpleQueue()
        self.native_id: int | None = None
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), name=name, daemon=True)
        self.thread.start()
        started.wait()
        _live.add(self)

    def _run(self, started: threading.Event) -> None:
        try:
            _enter(self.cpus)  # before this thread's first parallel region: its team is made on the pool
        finally:
            self.native_id = threading.get_native_id()
            started.set()
        while True:
            job = self.jobs.get()
            if job is None:
                return
            future, function, args, kwargs = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(function(*args, **kwargs))
            except BaseException as error:  # noqa: BLE001 - the caller gets it from the future
                future.set_exception(error)

    def submit(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        future = Future()
        self.jobs.put((future, function, args, kwargs))
        return future

    def stop(self) -> None:
        self.jobs.put(None)


def _stop(thread: _PinnedThread) -> None:
    thread.stop()


class Task:
    """Run ``module_or_callable`` on ``cpu_pool`` in a thread of its own: ``task(*args)`` returns a
    :class:`Future` at once (``.get()`` waits for the result); ``task.run_sync(*args)`` waits."""

    def __init__(self, module_or_callable: Callable[..., Any], cpu_pool: CPUPool) -> None:
        if not callable(module_or_callable):
            raise TypeError(f"Task runs a module or a callable, got {type(module_or_callable).__name__}")
        if not isinstance(cpu_pool, CPUPool):
            raise TypeError(f"Task takes a CPUPool, got {type(cpu_pool).__name__}")
        self.target = module_or_callable
        self.cpu_pool = cpu_pool
        self._thread = _PinnedThread(cpu_pool.core_ids, f"launchkit-task-{cpu_pool.core_ids[0]}")
        weakref.finalize(self, _stop, self._thread)

    @property
    def native_id(self) -> int | None:
        """The thread's id in /proc/self/task (for checking where it runs)."""
        return self._thread.native_id

    def __call__(self, *args: Any, **kwargs: Any) -> Future:
        return self._thread.submit(self.target, *args, **kwargs)

    def run_sync(self, *args: Any, **kwargs: Any) -> Any:
        return self(*args, **kwargs).get()
