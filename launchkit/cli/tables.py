"""Tables the commands print (rich): a bench run's levels and server view, a comparison with a baseline."""

from __future__ import annotations

from typing import Any


def print_bench_table(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    import time

    from launchkit.bench.report import SERVER_VIEW_HEADERS, percentile_cell, server_view_row, title

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=160)  # logs and pipes: do not squeeze the table to 80 columns
    table = Table(title=title(result, time.strftime("%Y-%m-%d")), title_justify="left")
    keys = [key for key in (result.levels[0].latency_ms if result.levels else {}) if key.startswith("p")]
    for column in ("level", "req/s", *[f"{key} ms" for key in keys], "ok", "errors"):
        table.add_column(column, justify="right", no_wrap=column == "level")
    small = False
    for level in result.levels:
        errors = level.requests_failed
        cells = [percentile_cell(level, key) for key in keys]
        small = small or any(cell.endswith("*") for cell in cells)
        table.add_row(level.level + (" (partial)" if level.interrupted else ""), f"{level.throughput:.1f}", *cells,
                      str(level.requests_ok), f"[red]{errors}[/red]" if errors else "0")
    if small:
        table.caption = "* fewer samples than this percentile needs: it is the largest latency or close to it"
    console.print(table)
    if any(level.server_view for level in result.levels):
        inside = Table(title="server-side view (from its /metrics)", title_justify="left")
        for column in SERVER_VIEW_HEADERS:
            inside.add_column(column, justify="right", no_wrap=column == "level")
        for level in result.levels:
            if level.server_view:
                inside.add_row(*server_view_row(level))
        console.print(inside)


def print_comparison(rows: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="comparison with the baseline", title_justify="left")
    for column in ("level", "metric", "baseline", "current", "change", "limit", "verdict"):
        table.add_column(column, justify="right")
    for row in rows:
        verdict = "[red]REGRESSED[/red]" if row.regressed else ("ok" if row.limit_percent is not None else "-")
        limit = "-" if row.limit_percent is None else f"{row.limit_percent:+g}%"
        table.add_row(row.level, row.metric, f"{row.baseline:.3f}", f"{row.current:.3f}", f"{row.change_percent:+.1f}%",
                      limit, verdict)
    Console(highlight=False).print(table)


def print_errors(result: Any) -> None:
    """Failed requests by status and kind per level, and the first response body of each status."""
    import click

    failing = [level for level in result.levels if level.requests_failed]
    if not failing:
        return
    for level in failing:
        kinds = [f"{status} ×{count}" for status, count in level.statuses.items() if not status.startswith("2")]
        kinds += [f"{kind} ×{count}" for kind, count in level.errors.items()]
        click.echo(f"launchkit bench: {level.level}: {level.requests_failed:,} of "
                   f"{level.requests_ok + level.requests_failed:,} requests failed ({', '.join(kinds)})", err=True)
    shown: set[str] = set()
    for level in failing:
        for status, bodies in level.error_bodies.items():
            if status not in shown and bodies:
                shown.add(status)
                body = bodies[0].strip().replace("\n", " ")
                click.echo(f"launchkit bench: first {status} answer: {body[:400]}", err=True)
