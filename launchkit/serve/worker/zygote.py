"""The fork server: a process that has imported torch and the worker's modules, run no operator,
and forks a worker whenever the frontend asks, so a replaced or added worker does not pay for
``import torch`` again.

Why no operator: an OpenMP runtime that has started its thread pool cannot be forked (the child
gets the pool's bookkeeping without its threads and hangs at its first parallel region). So the
pool is created in each child, after the child has been given its cores and thread count; the
child then pins each OpenMP thread to one of its cores, in order, as ``OMP_PLACES={a},{b},...``
with ``OMP_PROC_BIND=close`` does for an exec'd worker (GNU OpenMP reads those variables when it is
loaded, which happened here, once, before any worker's cores were known).

Protocol (a SOCK_SEQPACKET socketpair, one JSON message per packet):
  frontend → here:  {"fork": n, "argv": [...], "env": {...}, "cpus": [...], "threads": t}
                    with the worker's channel end attached (SCM_RIGHTS)
  here → frontend:  {"ready": pid} once, after the imports;
                    {"forked": n, "pid": pid}; {"exited": pid, "code": c} (c < 0: killed by signal -c)
The frontend closing its end stops this process; its children die with it (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import select
import signal
import socket
import sys
import traceback
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
MAX_MESSAGE = 1 << 20


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def configure_threads(cpus: list[int], threads: int) -> int:
    """Size the OpenMP team; with ``cpus``, make the team exist and pin the calling thread and each
    other thread of the process to one CPU of ``cpus`` in order. The number of threads pinned."""
    import torch

    torch.set_num_threads(threads)
    if not cpus:
        return 0
    os.sched_setaffinity(0, set(cpus))
    before = set(os.listdir("/proc/self/task"))
    if threads > 1:
        torch.ones(1 << 20).add_(1.0)  # a parallel region, so the team's threads exist to be pinned
    team = sorted(int(tid) for tid in set(os.listdir("/proc/self/task")) - before)
    os.sched_setaffinity(0, {cpus[0]})
    pinned = 1
    if len(team) == threads - 1:  # one CPU each, in order, as OMP_PROC_BIND=close with one place per core
        for tid, cpu in zip(team, cpus[1:]):
            os.sched_setaffinity(tid, {cpu})
            pinned += 1
    return pinned


MEMORY_POLICIES = {"preferred": 1, "membind": 2, "interleave": 3}  # MPOL_* of <linux/mempolicy.h>


def bind_memory(policy: str, nodes: list[int], syscall: int) -> None:
    """What ``numactl --<policy>=<nodes>`` sets before it execs: this process's memory policy."""
    bits = ctypes.sizeof(ctypes.c_ulong) * 8
    mask = (ctypes.c_ulong * (max(nodes) // bits + 1))()
    for node in nodes:
        mask[node // bits] |= 1 << (node % bits)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(syscall, MEMORY_POLICIES[policy], mask, ctypes.c_ulong(len(mask) * bits + 1)) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"set_mempolicy({policy}, nodes {nodes}): {os.strerror(error)}")


def _child(request: dict[str, Any], channel_fd: int) -> int:
    os.setsid()  # its own group, as an exec'd worker has: the frontend signals the group
    _die_with_parent()
    # its command line stays the fork server's; ps -o comm and top show which worker it is
    name = "lk-" + request["argv"][request["argv"].index("--worker-id") + 1] if "--worker-id" in request["argv"] \
        else "lk-worker"
    ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    os.environ.clear()
    os.environ.update(request["env"])
    if request.get("memory"):
        bind_memory(**request["memory"])
    configure_threads(list(request["cpus"]), int(request["threads"]))
    from launchkit.serve.worker.main import main

    return main([*request["argv"], "--fd", str(channel_fd)])


def _fork(request: dict[str, Any], channel_fd: int, control: socket.socket, wake: tuple[int, int]) -> int:
    pid = os.fork()
    if pid:
        os.close(channel_fd)
        return pid
    code = 1
    try:
        control.close()
        signal.set_wakeup_fd(-1)
        for fd in wake:
            os.close(fd)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        code = _child(request, channel_fd)
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    except BaseException:  # noqa: BLE001 - a forked child must never return into the fork server's loop
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        control.send(json.dumps({"exited": pid, "code": os.waitstatus_to_exitcode(status)}).encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="launchkit.serve.worker.zygote")
    parser.add_argument("--fd", type=int, required=True, help="the inherited end of the frontend's socketpair")
    args = parser.parse_args(argv)
    import torch  # noqa: F401 - the cost this process exists to pay once

    import launchkit.serve.worker.handler_api  # noqa: F401
    import launchkit.serve.worker.main  # noqa: F401

    control = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=args.fd)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select through the wakeup fd
    try:
        control.send(json.dumps({"ready": os.getpid()}).encode())
    except BrokenPipeError:
        return 0  # the frontend stopped while this process was importing torch (a start-up that failed)
    while True:
        watched: list[Any] = [control, wake_read]
        readable, _, _ = select.select(watched, [], [])
        if wake_read in readable:
            os.read(wake_read, 4096)
            _reap(control)
        if control in readable:
            message, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, 1)
            if not message:
                return 0  # the frontend is gone
            request = json.loads(message)
            if not fds:
                continue
            pid = _fork(request, fds[0], control, (wake_read, wake_write))
            control.send(json.dumps({"forked": request["fork"], "pid": pid}).encode())


if __name__ == "__main__":
    sys.exit(main())
