"""The kernel's CPU-list notation ("0-3,8,10-11"): parse it, print it.

Used for sysfs files, for user flags (``--core-list``, ``--node-id``, ``--rank``) and for
every place launchkit shows a set of CPUs, so one spelling is used everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable

from launchkit.core.errors import CpuListError

# Linux builds for at most 8,192 CPUs (CONFIG_NR_CPUS); a larger id is a typo, and a range up to it
# would be built in memory ("0-4000000000" once took the launcher's memory).
MAX_ID = 65_535


def parse_cpu_list(text: str, *, what: str = "CPU list") -> tuple[int, ...]:
    """Parse ``"0-3,8,10-11"`` into a sorted tuple of unique ints.

    Accepts blanks around items, an empty string (no CPUs) and the ``a-b:stride`` form that
    cgroup files never use but some users type.
    """
    values: set[int] = set()
    for raw in text.replace(" ", ",").split(","):
        item = raw.strip()
        if not item:
            continue
        stride = 1
        if ":" in item:
            item, _, stride_text = item.partition(":")
            stride = _to_int(stride_text, text, what)
            if stride < 1:
                raise CpuListError(f"{what} {text!r}: the stride in {raw!r} must be at least 1")
        if item.startswith("-"):
            raise CpuListError(f"{what} {text!r}: ids cannot be negative ({item})")
        first_text, dash, last_text = item.partition("-")
        if dash:
            first, last = _to_int(first_text, text, what), _to_int(last_text, text, what)
            if first > last:
                raise CpuListError(
                    f"{what} {text!r}: range {raw!r} runs backwards; write it as {last}-{first}"
                )
            values.update(range(first, last + 1, stride))
        else:
            values.add(_to_int(item, text, what))
    return tuple(sorted(values))


def _to_int(token: str, text: str, what: str) -> int:
    try:
        value = int(token)
    except ValueError:
        raise CpuListError(
            f"{what} {text!r} is not valid: {token!r} is not a number. "
            "Expected comma-separated ids and ranges, e.g. '0-3,8'."
        ) from None
    if value < 0:
        raise CpuListError(f"{what} {text!r}: ids cannot be negative ({value})")
    if value > MAX_ID:
        raise CpuListError(f"{what} {text!r}: {value} is larger than any machine's ids (at most {MAX_ID})")
    return value


def format_cpu_list(cpus: Iterable[int]) -> str:
    """Format ints as the shortest range list: ``[0, 1, 2, 3, 8]`` -> ``"0-3,8"``."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    start = prev = None
    for cpu in ordered:
        if prev is not None and cpu == prev + 1:
            prev = cpu
            continue
        if start is not None:
            parts.append(_span(start, prev))
        start = prev = cpu
    if start is not None:
        parts.append(_span(start, prev))
    return ",".join(parts)


def _span(first: int, last: int | None) -> str:
    return str(first) if last == first else f"{first}-{last}"
