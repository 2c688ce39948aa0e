"""From a request (what the user asked for) to a RunPlan, reading the live machine.

This is the one place that gathers the effects a plan depends on (sysfs, the library search,
the numactl probe) and hands them to the pure ``build_run_plan``. ``launchkit serve`` uses the
same entry point to plan its workers.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field

from launchkit.launch.libraries import NumactlStatus, find_libraries, probe_numactl
from launchkit.launch.cpu_options import CpuOptions
from launchkit.launch.runplan import BindingOptions, ProgramSpec, RunPlan, build_run_plan
from launchkit.core.topology import Topology, read_topology


@dataclass(frozen=True)
class RunRequest:
    program: ProgramSpec
    cpu: CpuOptions = field(default_factory=CpuOptions)
    allocator: str = "auto"
    omp_runtime: str = "auto"
    binding: BindingOptions = field(default_factory=BindingOptions)
    topology_root: str | None = None
    omp_wait: str = "auto"  # auto (spin for run; per model for server workers) | spin | brief | passive


def numactl_for(topology: Topology) -> NumactlStatus:
    """Probe numactl on the live machine; for a recorded machine, assume it would work there, as
    long as numactl is installed here (a plan that names a missing program cannot be started)."""
    if topology.root in ("/", "") or os.path.realpath(topology.root) == "/":
        return probe_numactl(topology.allowed_mems)
    if shutil.which("numactl") is None:
        return NumactlStatus(None, False, "numactl is not installed (Debian: apt-get install numactl)")
    return NumactlStatus("numactl", True, "assumed for a recorded topology (not probed)")


def plan_run(request: RunRequest, environ: Mapping[str, str] | None = None) -> tuple[Topology, RunPlan]:
    topology = read_topology(request.topology_root)
    plan = build_run_plan(
        topology,
        request.cpu,
        request.program,
        allocator=request.allocator,
        omp_runtime=request.omp_runtime,
        binding=request.binding,
        libraries=find_libraries(),
        numactl=numactl_for(topology) if request.binding.numactl else NumactlStatus(None, False, "disabled"),
        environ=dict(os.environ if environ is None else environ),
        omp_wait="spin" if request.omp_wait == "auto" else request.omp_wait,
    )
    return topology, plan
