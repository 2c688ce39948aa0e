"""Run a RunPlan: start, pin, forward signals, collect output, reap, report.

What the anchors got wrong and this does instead:
* instances are started by :func:`launchkit.launch.spawn.spawn` (argv lists, never ``sh -c``;
  CPU affinity set before exec; own session; ``PR_SET_PDEATHSIG=SIGKILL``, so a SIGKILLed
  launcher leaves no orphan instance);
* SIGINT/SIGTERM/SIGHUP are forwarded to every instance, SIGKILL follows after a grace period,
  a second Ctrl-C kills at once;
* the exit status is 0 only if every instance exited 0.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, BinaryIO

from launchkit.core.cpulist import format_cpu_list
from launchkit.core.errors import UsageError
from launchkit.core.signals import STOP_SIGNALS, handling
from launchkit.core.values import parse_choice
from launchkit.launch.runplan import InstanceLaunch, RunPlan
from launchkit.launch.spawn import signal_group, spawn

logger = logging.getLogger(__name__)
FORWARDED_SIGNALS = STOP_SIGNALS


class _WakeUp(Exception):
    """Raised by the signal handler to leave a blocking waitpid (PEP 475 would retry it)."""


class OnFailure(StrEnum):
    """What the others do when one instance fails."""

    KILL_ALL = "kill-all"  # stopped with the stop signal, then killed after the grace period
    WAIT = "wait"  # run to their end


@dataclass(frozen=True)
class SupervisorOptions:
    log_dir: str | None = None
    log_prefix: str = "run"
    on_failure: OnFailure = OnFailure.KILL_ALL

    def __post_init__(self) -> None:  # a library caller's word becomes the enum, or a UsageError naming them
        object.__setattr__(self, "on_failure", parse_choice(OnFailure, self.on_failure, "--on-failure"))
    grace_period: float = 5.0
    prefix_output: bool | None = None  # None: prefix lines when more than one instance runs


@dataclass
class InstanceResult:
    index: int
    pid: int
    cpus: tuple[int, ...]
    started: float
    ended: float | None = None
    returncode: int | None = None  # negative: killed by that signal (as subprocess reports it)
    stdout_log: str | None = None
    stderr_log: str | None = None

    @property
    def exit_status(self) -> int | None:
        """The shell-style status: 128+N for a signal."""
        if self.returncode is None:
            return None
        return 128 - self.returncode if self.returncode < 0 else self.returncode

    def describe(self) -> str:
        where = f"instance {self.index} (pid {self.pid}, CPUs {format_cpu_list(self.cpus)})"
        duration = f"{(self.ended or time.time()) - self.started:.2f} s"
        if self.returncode is None:
            return f"{where}: still running after {duration}"
        if self.returncode < 0:
            name = signal.Signals(-self.returncode).name
            return f"{where}: killed by {name} after {duration}"
        return f"{where}: exit {self.returncode} after {duration}"

    def to_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "pid": self.pid,
            "cpus": format_cpu_list(self.cpus),
            "returncode": self.returncode,
            "exit_status": self.exit_status,
            "duration_s": round((self.ended or time.time()) - self.started, 6),
            "stdout_log": self.stdout_log,
            "stderr_log": self.stderr_log,
        }


@dataclass
class RunResult:
    instances: list[InstanceResult]
    exit_code: int
    signal_received: str | None = None
    failure_action: str | None = None
    events: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "exit_code": self.exit_code,
            "signal_received": self.signal_received,
            "failure_action": self.failure_action,
            "instances": [result.to_dict() for result in self.instances],
            "events": self.events,
        }


def supervise(plan: RunPlan, options: SupervisorOptions, base_env: dict[str, str] | None = None) -> RunResult:
    return _Supervisor(plan, options, dict(os.environ if base_env is None else base_env)).run()


class _Supervisor:
    def __init__(self, plan: RunPlan, options: SupervisorOptions, base_env: dict[str, str]) -> None:
        self.plan = plan
        self.options = options
        self.base_env = base_env
        self.results: dict[int, InstanceResult] = {}  # by pid
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.pumps: list[threading.Thread] = []
        self.console_lock = threading.Lock()
        self.signal_received: int | None = None
        self.kill_deadline: float | None = None
        self.failure_action: str | None = None
        self.events: list[str] = []
        self.blocking = False
        self.log_dir = Path(options.log_dir) if options.log_dir else None
        prefix = options.prefix_output
        self.prefix_output = len(plan.instances) > 1 if prefix is None else prefix
        self.capture = self.prefix_output or self.log_dir is not None

    # -- lifecycle -------------------------------------------------------------------------------

    def run(self) -> RunResult:
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        started_at = time.time()
        try:
            with handling(self._on_signal, FORWARDED_SIGNALS):
                for instance in self.plan.instances:
                    if self.signal_received is not None:
                        break
                    self._start(instance)
                    if self.signal_received is not None:  # it came while this one was being spawned
                        self._terminate_all(self.signal_received)
                for thread in self.pumps:
                    thread.start()
                self._wait_all()
        finally:
            self._kill_leftover_groups()
        for thread in self.pumps:
            thread.join(timeout=2.0)
        result = RunResult(
            instances=sorted(self.results.values(), key=lambda r: r.index),
            exit_code=self._exit_code(),
            signal_received=signal.Signals(self.signal_received).name if self.signal_received else None,
            failure_action=self.failure_action,
            events=self.events,
        )
        if self.log_dir is not None:
            self._write_summary(result, started_at)
        return result

    def _start(self, instance: InstanceLaunch) -> None:
        env = {**self.base_env, **instance.env}
        if self.capture:
            env.setdefault("PYTHONUNBUFFERED", "1")  # lines reach the console as they are printed
        stdout_log = stderr_log = None
        if self.log_dir is not None:
            stem = self.log_dir / f"{self.options.log_prefix}.{instance.index}"
            stdout_log, stderr_log = f"{stem}.out.log", f"{stem}.err.log"
        pipe = subprocess.PIPE if self.capture else None
        try:
            proc = spawn(
                instance.argv,
                env=env,
                cpus=instance.cpus if instance.bind_cpus else None,
                stdin=subprocess.DEVNULL if len(self.plan.instances) > 1 else None,
                stdout=pipe,
                stderr=pipe,
            )
        except OSError as error:
            self._terminate_all(signal.SIGTERM)
            raise UsageError(f"could not start instance {instance.index} ({instance.argv[0]}): {error}") from error
        self.procs[proc.pid] = proc
        self.results[proc.pid] = InstanceResult(
            instance.index, proc.pid, instance.cpus, time.time(), stdout_log=stdout_log, stderr_log=stderr_log
        )
        self.events.append(f"started instance {instance.index} as pid {proc.pid} on CPUs {format_cpu_list(instance.cpus)}")
        if self.capture:
            tag = f"[{instance.index}] ".encode() if self.prefix_output else b""
            for stream, console, log in ((proc.stdout, sys.stdout, stdout_log), (proc.stderr, sys.stderr, stderr_log)):
                assert stream is not None
                self.pumps.append(
                    threading.Thread(target=self._pump, args=(stream, console, tag, log), daemon=True)
                )

    def _wait_all(self) -> None:
        while any(result.returncode is None for result in self.results.values()):
            if self.kill_deadline is None:
                try:
                    self.blocking = True
                    pid, status = os.waitpid(-1, 0)
                except ChildProcessError:
                    break
                except _WakeUp:
                    continue
                finally:
                    self.blocking = False
            else:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    if time.monotonic() >= self.kill_deadline:
                        self.events.append(f"grace period of {self.options.grace_period:g} s over: SIGKILL")
                        self._terminate_all(signal.SIGKILL)
                        self.kill_deadline = None
                    else:
                        time.sleep(0.02)
                    continue
            self._reaped(pid, status)

    def _reaped(self, pid: int, status: int) -> None:
        result = self.results.get(pid)
        if result is None:
            return
        result.returncode = os.waitstatus_to_exitcode(status)
        result.ended = time.time()
        self.procs[pid].returncode = result.returncode  # we reaped it; keep Popen from trying again
        self.events.append(result.describe())
        failed = result.returncode != 0
        if failed and self.signal_received is None and self.failure_action is None and self.options.on_failure is OnFailure.KILL_ALL:
            if any(r.returncode is None for r in self.results.values()):
                self.failure_action = f"instance {result.index} failed: stopping the others (--on-failure kill-all)"
                self.events.append(self.failure_action)
                self._warn(self.failure_action)
                self._begin_shutdown(signal.SIGTERM)

    # -- signals ---------------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.signal_received is not None and signum == signal.SIGINT:
            self.events.append("second SIGINT: SIGKILL")
            self._terminate_all(signal.SIGKILL)
            if self.blocking:
                raise _WakeUp
            return
        self.signal_received = self.signal_received or signum
        self.events.append(f"received {signal.Signals(signum).name}: forwarding to every instance")
        self._begin_shutdown(signal.Signals(signum))
        if self.blocking:
            raise _WakeUp

    def _begin_shutdown(self, signum: signal.Signals) -> None:
        self._terminate_all(signum)
        if self.kill_deadline is None:
            self.kill_deadline = time.monotonic() + self.options.grace_period

    def _terminate_all(self, signum: int) -> None:
        for pid, result in self.results.items():
            if result.returncode is None:
                signal_group(pid, signum)

    def _kill_leftover_groups(self) -> None:
        """An instance's own children (its process group) do not outlive the run."""
        for pid in self.results:
            signal_group(pid, signal.SIGKILL)

    # -- output ----------------------------------------------------------------------------------

    def _pump(self, stream: BinaryIO, console: IO[str], tag: bytes, log_path: str | None) -> None:
        log = open(log_path, "wb") if log_path else None  # noqa: SIM115 - closed below
        target = console.buffer if hasattr(console, "buffer") else None
        try:
            for line in iter(stream.readline, b""):
                if log is not None:
                    log.write(line)
                    log.flush()
                with self.console_lock:
                    if target is not None:
                        target.write(tag + line)
                        target.flush()
                    else:
                        console.write((tag + line).decode(errors="replace"))
        except (OSError, ValueError):
            pass
        finally:
            stream.close()
            if log is not None:
                log.close()

    def _warn(self, message: str) -> None:
        with self.console_lock:
            logger.warning(message)

    def _exit_code(self) -> int:
        if self.signal_received is not None:
            return 128 + self.signal_received
        failed = [r for r in self.results.values() if r.returncode not in (0, None)]
        if not failed:
            return 0 if len(self.results) == len(self.plan.instances) else 1
        first = min(failed, key=lambda r: r.ended or 0.0)
        return first.exit_status or 1

    def _write_summary(self, result: RunResult, started_at: float) -> None:
        assert self.log_dir is not None
        summary = {
            "started_at": started_at,
            "ended_at": time.time(),
            "plan": self.plan.to_dict(),
            "result": result.to_dict(),
        }
        path = self.log_dir / f"{self.options.log_prefix}.summary.json"
        path.write_text(json.dumps(summary, indent=2) + "\n")

