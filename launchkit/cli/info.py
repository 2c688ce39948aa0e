"""`launchkit info`."""

from __future__ import annotations

import json

import click

from launchkit.cli.options import CONTEXT, option


@click.command(context_settings=CONTEXT)
@option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@option("--topology-root", metavar="DIR", envvar="LAUNCHKIT_TOPOLOGY_ROOT",
        help="Describe a recorded machine: a directory holding sys/ and proc/ (default /).")
def info(as_json: bool, topology_root: str | None) -> None:
    """Sockets, NUMA nodes, cores, what this process may use, ISA and tuning libraries."""
    from launchkit.cli.render import render_machine
    from launchkit.launch.machine import machine_report

    report = machine_report(topology_root)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        render_machine(report)
