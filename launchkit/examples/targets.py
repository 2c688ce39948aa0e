"""What a command runs on: a bundled example by name (tiny when nothing is named) or an archive on disk.

bench, tune and optimize take the same targets and resolve them here, so a name means the same
thing to each and a missing file gets the same answer from each.
"""

from __future__ import annotations

from pathlib import Path

from launchkit.core.errors import UsageError
from launchkit.examples import EXAMPLES

DEFAULT_EXAMPLE = "tiny"


def names_an_example(target: str | None) -> bool:
    """True for nothing (the default example) and for a bundled example's name."""
    return target is None or target in EXAMPLES


def archive_named(target: str | None, alternatives: str) -> Path:
    """The archive ``target`` names: a bundled example (built once into the cache) or a path on disk
    (``file://`` allowed). ``alternatives`` ends the error for a path that is not there: what else to give."""
    if names_an_example(target):
        from launchkit.examples.cache import ensure_examples

        return ensure_examples((target or DEFAULT_EXAMPLE,))[0]
    assert target is not None
    path = Path(target.removeprefix("file://"))
    if not path.exists():
        raise UsageError(f"target {target}: no such file; give {alternatives}")
    return path


def example_choices() -> str:
    """The bundled examples, for messages: "tiny, resnet18, minilm or mnist"."""
    return ", ".join(EXAMPLES[:-1]) + f" or {EXAMPLES[-1]}"
