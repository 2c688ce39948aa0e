"""Stop signals, one home: which signals stop a launchkit command, and handlers held for a block.

``launchkit run`` forwards them to its instances, ``bench`` and ``tune`` turn them into
:class:`Interrupted` so that what was measured is kept. Each installs its handler for the block
that needs it and puts the previous handlers back after it, whatever happens (:func:`handling`).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(Exception):
    """A stop signal arrived during the run (internal: the run returns a partial result)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


@contextmanager
def handling(handler: Callable[[int, Any], Any], signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """``handler`` for ``signals`` inside the block; the handlers before it are restored after it."""
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)
