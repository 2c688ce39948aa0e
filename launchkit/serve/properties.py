"""The Java ``.properties`` text format of TorchServe's config.properties. Pure."""

from __future__ import annotations

import re


def parse_properties(text: str) -> dict[str, str]:
    """``key=value`` / ``key: value``, # and ! comments, backslash continuations."""
    entries: dict[str, str] = {}
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip() if not pending else raw.lstrip()
        if not pending and (not line or line[0] in "#!"):
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending += line[:-1]
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    for line in logical:
        match = re.match(r"([^=:\s]+)\s*[=:\s]\s*(.*)$", line)
        if match:
            entries[match.group(1)] = match.group(2).strip()
        else:
            entries[line] = ""
    return entries
