"""`launchkit info`: the machine, this process's share of it, and the tuning libraries present."""

from __future__ import annotations

from typing import Any

from launchkit.cpulist import format_cpu_list
from launchkit.isa import read_isa
from launchkit.launch.launcher import numactl_for
from launchkit.launch.libraries import find_libraries
from launchkit.topology import Topology, read_topology


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


def render_machine(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    summary = Table(title="Machine", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column()
    isa = report["isa"]
    quota = report["cpu_quota"]
    rows = [
        ("CPU", f"{isa.get('model') or '?'} ({isa.get('vendor') or '?'})"),
        ("sockets", str(report["sockets"])),
        ("NUMA nodes", str(len(report["numa_nodes"]))),
        ("physical cores", f"{report['physical_cores']} allowed of {report['physical_cores_total']}"),
        ("logical CPUs", f"{report['logical_cpus']} allowed of {report['online_cpus']} online"),
        ("threads per core", str(report["threads_per_core"])),
        ("allowed CPUs", f"{report['allowed_cpu_list']}  [dim]({report['allowed_source']})[/dim]"),
        ("CPU quota", "none" if quota is None else f"{quota:g} CPUs ({report['cpu_quota_source']})"),
        ("L3 domains", ", ".join(report["l3_domains"]) or "unknown"),
    ]
    if report["core_types"]:
        rows.append(
            ("core types", ", ".join(f"{kind}: {format_cpu_list(cpus)}" for kind, cpus in report["core_types"].items()))
        )
    flags = [name for name in ("avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx", "amx_int8") if isa.get(name)]
    rows.append(("ISA", ", ".join(flags) or "none of AVX2/AVX-512/AMX"))
    for key, value in rows:
        summary.add_row(key, value)
    console.print(summary)

    nodes = Table(title="NUMA nodes", title_justify="left")
    for column in ("node", "CPUs", "allowed", "memory"):
        nodes.add_column(column)
    for node in report["numa_nodes"]:
        memory = "?" if node["memory_mib"] is None else f"{node['memory_mib']} MiB"
        nodes.add_row(str(node["id"]), node["cpu_list"] or "-", format_cpu_list(node["allowed_cpus"]) or "-", memory)
    console.print(nodes)

    tools = Table(title="Libraries and tools", title_justify="left")
    tools.add_column("name")
    tools.add_column("found")
    for name, path in report["libraries"].items():
        tools.add_row(name, path or "[yellow]not found[/yellow]")
    numactl = report["numactl"]
    tools.add_row("numactl", f"{numactl['path'] or '[yellow]not found[/yellow]'} (membind: {'yes' if numactl['membind'] else 'no'})")
    console.print(tools)
    for note in report["notes"]:
        console.print(f"[dim]note: {note}[/dim]")
