"""Option helpers shared by the commands: the dash/underscore twins, compact help, the launcher's flags."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from launchkit.launch.flags import LAUNCH_FLAGS, declarations, spellings

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class AliasOption(click.Option):
    """An option whose help line shows only its first spelling."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        record = super().get_help_record(ctx)
        if record is None:
            return None
        first = self.opts[0]
        if self.secondary_opts:
            first = f"{first} / {self.secondary_opts[0]}"
        metavar = "" if self.is_flag else f" {self.make_metavar(ctx)}"
        return f"{first}{metavar}", record[1]


def option(*names: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``option("--node-id", "--nodes-list", dest="node_ids", ...)`` with underscore twins added."""
    dest = kwargs.pop("dest", None)
    return click.option(*spellings(*names), *([dest] if dest else []), cls=AliasOption, **kwargs)


def launch_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The launcher's flags (``launchkit.launch.flags``), for ``launchkit run``."""
    for names, kwargs in reversed(LAUNCH_FLAGS):
        spelled, options = declarations(names, kwargs)
        function = click.option(*spelled, cls=AliasOption, **options)(function)
    return function
