"""The one place launchkit's errors become exit statuses."""

from __future__ import annotations

from launchkit.core.errors import (AccuracyRefused, LaunchkitError, NoConfiguration, NotFaster, Regression,
                                   RequestsFailed, UsageError)

# Most specific first. 2 is bad usage (click's own, too); 3-7 are verdicts a CI job acts on; a command
# stopped by a signal exits 128 + its number (130 for Ctrl-C), like a shell.
EXIT_CODES: tuple[tuple[type[LaunchkitError], int], ...] = (
    (Regression, 3),
    (AccuracyRefused, 4),
    (NotFaster, 5),
    (RequestsFailed, 6),
    (NoConfiguration, 7),
    (UsageError, 2),
    (LaunchkitError, 1),
)
# each command's epilog lists only the statuses it can return
BENCH_EXIT_HELP = ("Exit status: 0 ok; 1 failure; 2 bad usage; 3 performance regression (--compare, --fail-on); 6 "
                   "requests failed beyond --max-error-rate; 128+N stopped by signal N.")
COMPARE_EXIT_HELP = "Exit status: 0 no regression; 2 bad usage; 3 a regression beyond --fail-on."


def exit_code(error: LaunchkitError) -> int:
    return next(code for cls, code in EXIT_CODES if isinstance(error, cls))
