"""Where the library's log records go when launchkit runs as a command.

The library only logs (``logging.getLogger(__name__)`` under ``launchkit.``); the CLI decides
how it looks: ``launchkit <part>: message`` on stderr, the part being the package that logged
(``serve``, ``launch``, ...), warnings and errors marked. On a terminal the marks are coloured;
under CI (not a terminal, or ``NO_COLOR`` set) the lines are plain. ``-v`` adds debug records
with the logger's full name.
"""

from __future__ import annotations

import logging
import os
import sys

LEVELS = ("debug", "info", "warning", "error")
_COLOURS = {logging.WARNING: "\033[33m", logging.ERROR: "\033[31m", logging.CRITICAL: "\033[31m"}


class _Formatter(logging.Formatter):
    def __init__(self, colour: bool, debug: bool) -> None:
        super().__init__()
        self.colour = colour
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        parts = record.name.split(".")
        where = parts[1] if len(parts) > 1 and parts[0] == "launchkit" else record.name
        if self.debug:
            where = record.name
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        mark = ""
        if record.levelno >= logging.WARNING:
            mark = f"{record.levelname.lower()}: "
            if self.colour:
                mark = f"{_COLOURS[record.levelno]}{mark}\033[0m"
        elif record.levelno < logging.INFO:
            mark = "debug: "
        return f"launchkit {where}: {mark}{message}"


def configure_logging(level: str = "info") -> None:
    """Send ``launchkit.*`` records at ``level`` and above to stderr (once per process)."""
    logger = logging.getLogger("launchkit")
    numeric = getattr(logging, level.upper())
    colour = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(colour, numeric < logging.INFO))
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(numeric)
    logger.propagate = False
