"""The whole launch, as data: per instance its CPUs, memory nodes, environment and argv.

``build_run_plan`` is pure (its inputs are the topology, the libraries found, the numactl probe
and the caller's environment), so ``--dry-run`` prints exactly what a real run would do, and the
tests can check plans for machines we do not have.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from launchkit.core.cpulist import format_cpu_list
from launchkit.core.errors import UsageError
from launchkit.launch.env import RuntimeChoice, choose_runtime, instance_env
from launchkit.launch.libraries import FoundLibrary, NumactlStatus
from launchkit.launch.cpu_options import CpuOptions
from launchkit.launch.plan import plan_cpus
from launchkit.core.topology import Topology

MEM_POLICIES = ("bind", "preferred", "interleave", "none")


@dataclass(frozen=True)
class ProgramSpec:
    """What each instance runs: a Python script (default), a module (``-m``) or any program."""

    program: str
    args: tuple[str, ...] = ()
    module: bool = False
    no_python: bool = False
    python: str = sys.executable

    def argv(self) -> list[str]:
        if self.no_python:
            return [self.program, *self.args]
        if self.module:
            return [self.python, "-m", self.program, *self.args]
        return [self.python, self.program, *self.args]


@dataclass(frozen=True)
class BindingOptions:
    cpu_affinity: bool = True  # --disable-taskset turns it off
    numactl: bool = True  # --disable-numactl turns memory binding off
    mem_policy: str = "bind"  # bind | preferred | interleave | none


@dataclass(frozen=True)
class InstanceLaunch:
    index: int
    cpus: tuple[int, ...]
    nodes: tuple[int, ...]
    mem_nodes: tuple[int, ...]  # the nodes numactl binds memory to; () when not bound
    threads: int
    env: dict[str, str]  # variables launchkit sets (the rest of the environment is inherited)
    argv: list[str]
    bind_cpus: bool  # whether the child's affinity is set to ``cpus`` before exec
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "cpus": list(self.cpus),
            "cpu_list": format_cpu_list(self.cpus),
            "nodes": list(self.nodes),
            "mem_nodes": list(self.mem_nodes),
            "threads": self.threads,
            "bind_cpus": self.bind_cpus,
            "env": dict(self.env),
            "argv": list(self.argv),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class RunPlan:
    ninstances: int
    instances: tuple[InstanceLaunch, ...]
    runtime: RuntimeChoice
    memory_binding: str  # how memory is bound, in words
    idle_cpus: tuple[int, ...]
    notes: tuple[str, ...]
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "ninstances": self.ninstances,
            "instances": [instance.to_dict() for instance in self.instances],
            "runtime": self.runtime.to_dict(),
            "memory_binding": self.memory_binding,
            "idle_cpus": list(self.idle_cpus),
            "notes": list(self.notes),
            "warnings": list(self.warnings),
        }


def build_run_plan(
    topology: Topology,
    cpu_options: CpuOptions,
    program: ProgramSpec,
    *,
    allocator: str = "auto",
    omp_runtime: str = "auto",
    binding: BindingOptions = BindingOptions(),
    libraries: Mapping[str, FoundLibrary | None],
    numactl: NumactlStatus,
    environ: Mapping[str, str],
    omp_wait: str = "spin",
) -> RunPlan:
    if binding.mem_policy not in MEM_POLICIES:
        raise UsageError(f"--mem-policy {binding.mem_policy!r} is not one of {', '.join(MEM_POLICIES)}")
    cpu_plan = plan_cpus(topology, cpu_options, environ)
    runtime = choose_runtime(allocator, omp_runtime, libraries)
    notes = list(cpu_plan.notes) + list(runtime.notes)
    warnings = list(cpu_plan.warnings)
    bind_memory, binding_words = _memory_binding(binding, numactl, topology, warnings)
    if not binding.cpu_affinity:
        warnings.append("--disable-taskset: instances are not pinned; only OpenMP settings confine them")

    instances = []
    for instance in cpu_plan.instances:
        env = instance_env(instance, cpu_plan.ninstances, runtime, environ, omp_wait=omp_wait)
        warnings += [w for w in env.warnings if w not in warnings]
        mem_nodes = instance.mem_nodes if bind_memory else ()
        argv = program.argv()
        if mem_nodes:
            argv = _numactl_argv(numactl.path or "numactl", binding.mem_policy, mem_nodes) + argv
        instances.append(
            InstanceLaunch(
                index=instance.index,
                cpus=instance.cpus,
                nodes=instance.nodes,
                mem_nodes=mem_nodes,
                threads=instance.threads,
                env=env.set,
                argv=argv,
                bind_cpus=binding.cpu_affinity,
                notes=env.notes,
            )
        )
    return RunPlan(
        cpu_plan.ninstances, tuple(instances), runtime, binding_words, cpu_plan.idle_cpus, tuple(notes), tuple(warnings)
    )


def _memory_binding(
    binding: BindingOptions, numactl: NumactlStatus, topology: Topology, warnings: list[str]
) -> tuple[bool, str]:
    if not binding.numactl or binding.mem_policy == "none":
        return False, "off (--disable-numactl or --mem-policy none)"
    if not numactl.membind:
        warnings.append(f"memory is not bound to the instances' NUMA nodes: {numactl.reason}")
        return False, f"off ({numactl.reason})"
    return True, f"numactl --{_NUMACTL_FLAG[binding.mem_policy]} ({numactl.reason})"


_NUMACTL_FLAG = {"bind": "membind", "preferred": "preferred", "interleave": "interleave"}


def _numactl_argv(path: str, policy: str, nodes: tuple[int, ...]) -> list[str]:
    # --preferred takes one node: the first node of the instance's CPUs.
    target = str(nodes[0]) if policy == "preferred" else format_cpu_list(nodes)
    return [path, f"--{_NUMACTL_FLAG[policy]}={target}", "--"]


def check_program(program: ProgramSpec, cwd: str | None = None) -> None:
    """Fail early, with a clear message, when the program cannot be started at all."""
    if program.no_python:
        if shutil.which(program.program) is None and not os.access(program.program, os.X_OK):
            raise UsageError(
                f"program {program.program!r} was not found on PATH and is not an executable file "
                "(with --no-python the program is run directly)"
            )
        return
    if program.module:
        return  # the interpreter reports an unknown module itself, with the module name
    path = os.path.join(cwd or os.getcwd(), program.program)
    if not os.path.exists(path):
        raise UsageError(
            f"Python program {program.program!r} not found. To run a module use -m/--module; "
            "to run a non-Python program use --no-python."
        )
