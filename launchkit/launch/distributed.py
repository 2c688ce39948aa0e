"""Multi-node runs on torchrun's engine: launchkit plans each local rank, torchrun does the rest.

torchrun (``torch.distributed.run``, the elastic agent with its c10d rendezvous) owns what it is
good at and users trust: rendezvous across machines, restarts, and the rank environment (RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT, ...). launchkit owns what torchrun does not do: each
local rank on its own cores (the same disjoint, node-aware plan as ``--ninstances``), its
OMP_NUM_THREADS, memory binding, allocator and OpenMP preloads, and optional oneCCL worker cores.

How they meet: launchkit writes the plan of every local rank to a file and starts torchrun's
agent with ``--no-python`` on a small entry point (:mod:`launchkit.launch.rank`). The agent starts
each local rank on that entry point, which reads LOCAL_RANK, takes its planned CPUs and
environment, and execs the user's program (through numactl when memory is bound), so the program
is exactly what ``--ninstances`` would have run, with torchrun's rank variables on top.

Planning is pure (this module's ``plan_distributed`` and ``agent_argv``); starting and stopping
the agent is in ``run_distributed``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from launchkit.core.cpulist import format_cpu_list
from launchkit.core.errors import UsageError
from launchkit.core.signals import STOP_SIGNALS, handling
from launchkit.launch.runplan import InstanceLaunch, RunPlan
from launchkit.launch.spawn import spawn, stop

logger = logging.getLogger(__name__)

FORWARDED = STOP_SIGNALS


@dataclass(frozen=True)
class RendezvousOptions:
    """torchrun's flags, with torchrun's names and defaults."""

    nnodes: str = "1"  # N, or MIN:MAX for an elastic job
    nproc_per_node: int = 1
    rdzv_endpoint: str | None = None  # HOST[:PORT]; None with one node: torchrun's --standalone
    rdzv_backend: str = "c10d"
    rdzv_id: str = "none"
    node_rank: int | None = None
    max_restarts: int = 0
    ccl_worker_count: int = 0  # cores per rank reserved for oneCCL's workers (0: none)

    def check(self) -> None:
        if not re.fullmatch(r"\d+(:\d+)?", self.nnodes) or any(int(n) < 1 for n in self.nnodes.split(":")):
            raise UsageError(f"--nnodes {self.nnodes!r}: expected a node count N or a range MIN:MAX (e.g. 2 or 1:4)")
        low, _, high = self.nnodes.partition(":")
        if high and int(high) < int(low):
            raise UsageError(f"--nnodes {self.nnodes}: the maximum is below the minimum")
        if self.nproc_per_node < 1:
            raise UsageError("--nproc-per-node must be 1 or more")
        if self.rdzv_endpoint is None and self.nnodes != "1":
            raise UsageError(f"--nnodes {self.nnodes} needs --rdzv-endpoint HOST:PORT (where the nodes meet; the "
                             "same on every node)")
        if self.rdzv_endpoint is not None and not re.fullmatch(r"[^\s:]+(:\d{1,5})?|\[[0-9a-fA-F:.]+\](:\d{1,5})?",
                                                               self.rdzv_endpoint):
            raise UsageError(f"--rdzv-endpoint {self.rdzv_endpoint!r}: expected HOST:PORT, e.g. node0.example:29400")
        if self.max_restarts < 0:
            raise UsageError("--max-restarts must be 0 or more")
        if self.ccl_worker_count < 0:
            raise UsageError("--ccl-worker-count must be 0 or more")

    def to_dict(self) -> dict[str, Any]:
        return {"nnodes": self.nnodes, "nproc_per_node": self.nproc_per_node, "rdzv_endpoint": self.rdzv_endpoint,
                "rdzv_backend": self.rdzv_backend, "rdzv_id": self.rdzv_id, "node_rank": self.node_rank,
                "max_restarts": self.max_restarts, "ccl_worker_count": self.ccl_worker_count}


@dataclass(frozen=True)
class DistributedPlan:
    rendezvous: RendezvousOptions
    plan: RunPlan  # one instance per local rank
    log_dir: str | None = None
    log_prefix: str = "run"

    @property
    def ranks(self) -> tuple[InstanceLaunch, ...]:
        return self.plan.instances

    def to_dict(self) -> dict[str, Any]:
        ranks = []
        for launch in self.ranks:
            entry = launch.to_dict()
            entry["local_rank"] = entry.pop("index")
            ranks.append(entry)
        return {"mode": "torchrun", "rendezvous": self.rendezvous.to_dict(), "local_ranks": ranks,
                "agent_argv": agent_argv(self, "<plan file>"), "runtime": self.plan.runtime.to_dict(),
                "memory_binding": self.plan.memory_binding, "idle_cpus": list(self.plan.idle_cpus),
                "notes": list(self.plan.notes), "warnings": list(self.plan.warnings),
                "log_dir": self.log_dir, "log_prefix": self.log_prefix}


def plan_distributed(plan: RunPlan, rendezvous: RendezvousOptions, *, ccl_available: bool,
                     log_dir: str | None = None, log_prefix: str = "run") -> DistributedPlan:
    """The per-local-rank plan from a launch plan of ``nproc_per_node`` instances. Pure."""
    rendezvous.check()
    if plan.ninstances != rendezvous.nproc_per_node or len(plan.instances) != rendezvous.nproc_per_node:
        raise UsageError(f"--nproc-per-node {rendezvous.nproc_per_node} needs that many instances in the plan "
                         f"(it has {len(plan.instances)}); drop --ninstances/--rank, or make them agree")
    warnings = list(plan.warnings)
    ranks = list(plan.instances)
    if rendezvous.ccl_worker_count:
        if ccl_available:
            ranks = [_reserve_ccl_cores(launch, rendezvous.ccl_worker_count) for launch in ranks]
        else:
            warnings.append("--ccl-worker-count ignored: oneCCL's bindings for PyTorch (oneccl_bindings_for_pytorch)"
                            " are not importable here, so nothing would use the reserved cores")
    return DistributedPlan(rendezvous, replace(plan, instances=tuple(ranks), warnings=tuple(warnings)), log_dir,
                           log_prefix)


def _reserve_ccl_cores(launch: InstanceLaunch, count: int) -> InstanceLaunch:
    """The last ``count`` CPUs of the rank run oneCCL's workers; OpenMP keeps the rest."""
    if count >= len(launch.cpus):
        raise UsageError(f"--ccl-worker-count {count} leaves local rank {launch.index} no CPU for its own threads "
                         f"(it has {len(launch.cpus)}: {format_cpu_list(launch.cpus)}); lower it or give each rank "
                         "more cores")
    compute, reserved = launch.cpus[:-count], launch.cpus[-count:]
    env = dict(launch.env)
    env.update(OMP_NUM_THREADS=str(len(compute)), LAUNCHKIT_CPUS=format_cpu_list(compute),
               CCL_WORKER_COUNT=str(count), CCL_WORKER_AFFINITY=",".join(str(cpu) for cpu in reserved))
    if "OMP_PLACES" in env:
        env["OMP_PLACES"] = ",".join(f"{{{cpu}}}" for cpu in compute)
    notes = (*launch.notes, f"CPUs {format_cpu_list(reserved)} reserved for {count} oneCCL worker(s)")
    # the process keeps every CPU of its slice: oneCCL pins its workers to the reserved ones itself
    return replace(launch, threads=len(compute), env=env, notes=notes)


def agent_argv(plan: DistributedPlan, plan_file: str, python: str = sys.executable) -> list[str]:
    """torchrun's command line: its own agent, each local rank started on launchkit's rank entry point."""
    rendezvous = plan.rendezvous
    argv = [python, "-m", "torch.distributed.run", "--nnodes", rendezvous.nnodes,
            "--nproc-per-node", str(rendezvous.nproc_per_node), "--max-restarts", str(rendezvous.max_restarts)]
    if rendezvous.rdzv_endpoint is None:
        argv.append("--standalone")
    else:
        argv += ["--rdzv-backend", rendezvous.rdzv_backend, "--rdzv-endpoint", rendezvous.rdzv_endpoint,
                 "--rdzv-id", rendezvous.rdzv_id]
    if rendezvous.node_rank is not None:
        argv += ["--node-rank", str(rendezvous.node_rank)]
    return [*argv, "--no-python", python, "-m", "launchkit.launch.rank", plan_file]


def rank_file_content(plan: DistributedPlan) -> dict[str, Any]:
    """What the rank entry point reads: each local rank's CPUs, environment and argv, and the logs."""
    return {"ranks": [launch.to_dict() for launch in plan.ranks], "log_dir": plan.log_dir,
            "log_prefix": plan.log_prefix}


def torch_available() -> bool:
    """Whether torchrun's agent can start here (found without importing torch: that takes seconds)."""
    return importlib.util.find_spec("torch") is not None


def ccl_available(python: str = sys.executable) -> bool:
    result = subprocess.run([python, "-c", "import oneccl_bindings_for_pytorch"], capture_output=True)
    return result.returncode == 0


def run_distributed(plan: DistributedPlan, grace_period: float = 5.0) -> int:
    """Start torchrun's agent on the plan and wait; signals are forwarded to it (it stops its ranks).

    Returns the shell-style exit status: the agent's (non-zero when a rank failed beyond
    --max-restarts), or 128+N when a signal N stopped the run.
    """
    folder = Path(tempfile.mkdtemp(prefix="launchkit-torchrun-"))
    plan_file = folder / "ranks.json"
    plan_file.write_text(json.dumps(rank_file_content(plan)))
    argv = agent_argv(plan, str(plan_file))
    logger.info("starting torchrun's agent: %s", " ".join(argv))
    # the agent itself needs one thread; set here, torchrun also skips its OMP_NUM_THREADS=1 banner
    # (each rank's own value comes from the plan, applied by the rank entry point)
    agent = spawn(argv, env={**os.environ, "OMP_NUM_THREADS": "1"})
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        if len(received) > 1:  # a second signal: no more patience
            stop(agent, grace_s=0.0)
            return
        try:
            agent.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)
        except ProcessLookupError:
            pass

    try:
        with handling(forward, FORWARDED):
            deadline: float | None = None
            while True:
                try:
                    code = agent.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    if received and deadline is None:
                        deadline = time.monotonic() + grace_period + 30.0  # the agent's own shutdown takes time
                    if deadline is not None and time.monotonic() > deadline:
                        stop(agent, grace_s=0.0)
    finally:
        stop(agent, grace_s=grace_period)  # its group: nothing it started outlives the launcher
        plan_file.unlink(missing_ok=True)
        folder.rmdir()
    if received:
        return 128 + received[0]
    return 128 - code if code < 0 else code
