"""Named presets (`--profile NAME|FILE`): TOML files with one table per command.

A profile supplies defaults; flags given on the command line always win. Bundled profiles live
in ``launchkit/profiles/`` (``profiles/`` at the repository root points there).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from launchkit.core.errors import UsageError

BUNDLED = Path(__file__).parent.parent / "profiles"


def bundled_profiles() -> list[str]:
    return sorted(path.stem for path in BUNDLED.glob("*.toml"))


def load_profile(name_or_path: str, section: str) -> dict[str, Any]:
    """The ``[section]`` table of a bundled profile NAME or of a TOML FILE."""
    path = Path(name_or_path)
    if not (path.suffix == ".toml" or "/" in name_or_path):
        path = BUNDLED / f"{name_or_path}.toml"
    if not path.is_file():
        raise UsageError(
            f"profile {name_or_path!r} not found: give a bundled name ({', '.join(bundled_profiles())}) "
            "or the path of a .toml file"
        )
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"profile {path} is not valid TOML: {error}") from None
    table = data.get(section, {})
    if not isinstance(table, dict):
        raise UsageError(f"profile {path}: [{section}] must be a table")
    return table
