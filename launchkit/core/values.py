"""Parsing the small values users type into files, query strings and flags, one way everywhere."""

from __future__ import annotations

from typing import Any

from launchkit.core.errors import UsageError

TRUE_WORDS = ("true", "yes", "1", "on")
FALSE_WORDS = ("false", "no", "0", "off")


def parse_bool(value: Any, where: str) -> bool:
    """``true/yes/1/on`` or ``false/no/0/off`` (any case), or a bool; else a UsageError naming ``where``."""
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise UsageError(f"{where}={value!r}: expected true or false")
