"""`launchkit info`: the machine, this process's share of it, and the tuning libraries present."""

from __future__ import annotations

from typing import Any

from launchkit.core.cpulist import format_cpu_list
from launchkit.core.isa import read_isa
from launchkit.launch.request import numactl_for
from launchkit.launch.libraries import find_libraries
from launchkit.core.topology import read_topology


def machine_report(root: str | None = None) -> dict[str, Any]:
    topology = read_topology(root)
    isa = read_isa(topology.root)
    libraries = find_libraries()
    numactl = numactl_for(topology)
    allowed_cores = topology.allowed_cores
    return {
        "root": topology.root,
        "sockets": len(topology.sockets),
        "numa_nodes": [
            {
                "id": node.id,
                "cpus": list(node.cpus),
                "cpu_list": format_cpu_list(node.cpus),
                "memory_mib": None if node.memory_kb is None else node.memory_kb // 1024,
                "allowed_cpus": [cpu for cpu in node.cpus if cpu in set(topology.allowed_cpus)],
            }
            for node in topology.nodes
        ],
        "online_cpus": len(topology.online_cpus),
        "physical_cores_total": len(topology.cores),
        "physical_cores": len(allowed_cores),
        "logical_cpus": len(topology.allowed_cpus),
        "threads_per_core": topology.threads_per_core,
        "allowed_cpus": list(topology.allowed_cpus),
        "allowed_cpu_list": format_cpu_list(topology.allowed_cpus),
        "allowed_source": topology.allowed_source,
        "allowed_mems": list(topology.allowed_mems),
        "cpu_quota": topology.cpu_quota,
        "cpu_quota_source": topology.quota_source,
        "core_types": topology.core_types,
        "l3_domains": [format_cpu_list(cpus) for cpus in topology.l3_domains.values()],
        "isa": isa.to_dict(),
        "libraries": {name: (found.path if found else None) for name, found in libraries.items()},
        "numactl": numactl.to_dict(),
        "notes": list(topology.notes),
    }
