"""The event loop launchkit's servers and load generators run on: uvloop where installed, else asyncio's.

uvloop is a declared dependency (its loop is what the serving and load-generating figures were
measured on); the fallback keeps a platform without its wheel working, slower.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the fastest loop available."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def runner() -> asyncio.Runner:
    """An ``asyncio.Runner`` on the fastest loop available (for a server that runs one main coroutine)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)
