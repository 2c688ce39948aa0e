"""The `launchkit` command: parses flags, calls one function per command, prints.

One module per command (``info``, ``run``, ``archive``, ``serve``, ``bench`` with ``report``,
``optimize``); shared option helpers in ``options``, human output of plans in ``render``,
logging in ``logs``. Human output goes to stderr; ``--json`` prints machine-readable JSON on
stdout and nothing else there. Errors become ``launchkit: error: ...`` and an exit status, the
one place launchkit's error tree meets exit codes (``exits``).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from launchkit import __version__
from launchkit.cli.logs import LEVELS, configure_logging
from launchkit.cli.options import CONTEXT
from launchkit.cli.exits import exit_code
from launchkit.core.errors import LaunchkitError

# Each command's module is imported when that command runs (click's lazy-group pattern): `launchkit
# run` starts its program sooner without importing serve, bench, optimize and tune first.
COMMANDS = {
    "info": "launchkit.cli.info:info", "run": "launchkit.cli.run:run", "archive": "launchkit.cli.archive:archive",
    "serve": "launchkit.cli.serve:serve", "bench": "launchkit.cli.bench:bench", "ab": "launchkit.cli.ab:ab",
    "report": "launchkit.cli.bench:report", "optimize": "launchkit.cli.optimize:optimize",
    "tune": "launchkit.cli.tune:tune",
}


class _Group(click.Group):
    """Turns launchkit's errors into one clear line and an exit status, without a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attribute = target.split(":")
        return getattr(importlib.import_module(module), attribute)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LaunchkitError as error:
            click.echo(f"launchkit: error: {error}", err=True)
            sys.exit(exit_code(error))
        except OSError as error:
            # A path the user named that cannot be read or written: one line, not a traceback.
            if error.filename is None:
                raise
            click.echo(f"launchkit: error: {error.filename}: {error.strerror or error}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="launchkit")
@click.option("-v", "--verbose", count=True, help="More detail in the log (-v: debug).")
@click.option("--log-level", type=click.Choice(LEVELS, case_sensitive=False), envvar="LAUNCHKIT_LOG_LEVEL",
              help="Log level (default info; env LAUNCHKIT_LOG_LEVEL).")
def main(verbose: int, log_level: str | None) -> None:
    """Fast, measurable PyTorch inference on CPUs.

    \b
      launchkit info                 what this machine is and what this process may use
      launchkit run ... script.py    launch pinned, tuned instances of a program
      launchkit archive ...          make a model archive (.mar), like torch-model-archiver
      launchkit serve [MODEL.mar]    serve models with dynamic batching on pinned workers
      launchkit bench [TARGET]       load-test a server, write a report, gate CI on regressions
      launchkit ab [ab's flags] URL  ApacheBench's command line and report, launchkit's load generator
      launchkit optimize [MODEL]     bf16 / channels-last / TorchScript / int8, measured and accuracy-checked
      launchkit tune [TARGET]        find the best serving configuration under a latency budget
    """
    configure_logging("debug" if verbose and not log_level else (log_level or "info"))


if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))
