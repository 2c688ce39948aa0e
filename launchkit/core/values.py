"""Parsing the small values users type into files, query strings and flags, one way everywhere."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeVar

from launchkit.core.errors import UsageError

Choice = TypeVar("Choice", bound=StrEnum)

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


def parse_choice(kind: type[Choice], value: Any, where: str, error: type[UsageError] = UsageError) -> Choice:
    """One of ``kind``'s values (an enum of the words a flag or setting takes); else ``error`` naming them."""
    try:
        return kind(value)
    except ValueError:
        raise error(f"{where} {value!r}: expected one of {', '.join(kind)}") from None
