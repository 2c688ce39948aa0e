"""Human-readable output of `launchkit info` and `launchkit run --dry-run` (rich, lazily imported)."""

from __future__ import annotations

from typing import Any

from launchkit.core.cpulist import format_cpu_list
from launchkit.launch.runplan import RunPlan


def render_plan(plan: RunPlan) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(soft_wrap=True, highlight=False)
    shown = len(plan.instances)
    console.print(f"[bold]launch plan[/bold]: {shown} of {plan.ninstances} instance(s)")
    for instance in plan.instances:
        console.print(
            f"[bold]instance {instance.index}[/bold]: CPUs {format_cpu_list(instance.cpus)} "
            f"({instance.threads} threads, memory nodes {format_cpu_list(instance.mem_nodes) or 'not bound'})"
        )
        console.print(f"  argv: {escape(' '.join(instance.argv))}")
        for number, (key, value) in enumerate(instance.env.items()):
            console.print(f"  {'env: ' if number == 0 else '     '}{key}={escape(value)}")
        for note in instance.notes:
            console.print(f"  [dim]note: {escape(note)}[/dim]")
    runtime = plan.runtime
    console.print(
        f"allocator: {runtime.allocator} ({runtime.allocator_path or 'C library'}); "
        f"OpenMP: {runtime.omp_runtime} ({runtime.iomp_path or 'the one torch links'}); "
        f"memory binding: {plan.memory_binding}"
    )
    for note in plan.notes:
        console.print(f"[dim]note: {escape(note)}[/dim]")
    for warning in plan.warnings:
        console.print(f"[yellow]warning: {escape(warning)}[/yellow]")


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
    flags = [name for name in ("avx2", "avx512", "avx_vnni", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx",
                               "amx_int8", "amx_fp16") if isa.get(name)]
    rows.append(("ISA", ", ".join(flags) or "none of AVX2/AVX-512/AMX"))
    for dtype, support in (isa.get("dtypes") or {}).items():
        rows.append((dtype, ("native: " if support["native"] else "[yellow]") + support["how"]
                     + ("" if support["native"] else "[/yellow]")))
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
