"""Finding the libraries launchkit preloads (tcmalloc, jemalloc, Intel OpenMP) and numactl.

run_cpu looked only for the exact name ``lib<name>.so`` in a short list of directories, so it
missed Debian's multiarch directory, versioned sonames (``libjemalloc.so.2``), tcmalloc-minimal,
and pip's ``intel-openmp`` in a virtual environment that is not activated. We search, in order:
the running interpreter's prefix, ``$VIRTUAL_ENV``, ``$CONDA_PREFIX``, ``~/.local/lib``,
``/usr/local``, the multiarch directories, the plain system directories, then the ``ldconfig``
cache; in each, unversioned names before versioned ones. ``$LAUNCHKIT_LIBRARY_PATH`` directories
are searched before all of these.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

LIBRARY_PATH_ENV = "LAUNCHKIT_LIBRARY_PATH"

# Per library, the file names we accept, best first. The full tcmalloc beats tcmalloc-minimal
# (it adds heap profiling), but Debian's libtcmalloc-minimal4 is what most users have.
LIBRARY_NAMES: dict[str, tuple[str, ...]] = {
    "tcmalloc": ("libtcmalloc.so", "libtcmalloc.so.4", "libtcmalloc_minimal.so", "libtcmalloc_minimal.so.4"),
    "jemalloc": ("libjemalloc.so", "libjemalloc.so.2", "libjemalloc.so.1"),
    "iomp5": ("libiomp5.so",),
}

# Which family a preloaded file belongs to, so a user's libjemalloc.so.2 counts as jemalloc.
_FAMILY_PATTERNS = {
    "tcmalloc": re.compile(r"^libtcmalloc(_minimal)?(_debug)?\.so"),
    "jemalloc": re.compile(r"^libjemalloc\.so"),
    "iomp5": re.compile(r"^libiomp5\.so"),
    "gomp": re.compile(r"^libgomp.*\.so"),
}


@dataclass(frozen=True)
class FoundLibrary:
    name: str  # family: "tcmalloc", "jemalloc", "iomp5"
    path: str
    found_in: str  # which search location produced it


def library_family(path: str) -> str | None:
    base = os.path.basename(path)
    for family, pattern in _FAMILY_PATTERNS.items():
        if pattern.match(base):
            return family
    return None


def search_dirs() -> list[Path]:
    # LAUNCHKIT_LIBRARY_PATH (colon-separated) comes first: libraries unpacked somewhere private.
    dirs: list[Path] = [Path(entry) for entry in os.environ.get(LIBRARY_PATH_ENV, "").split(":") if entry]
    dirs += [Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib"]
    for variable in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        if os.environ.get(variable):
            dirs.append(Path(os.environ[variable]) / "lib")
    dirs += [Path.home() / ".local/lib", Path("/usr/local/lib"), Path("/usr/local/lib64")]
    triplet = sysconfig.get_config_var("MULTIARCH") or f"{os.uname().machine}-linux-gnu"
    dirs += [Path("/usr/lib") / triplet, Path("/lib") / triplet]
    dirs += [Path("/usr/lib"), Path("/usr/lib64"), Path("/lib"), Path("/lib64")]
    unique: list[Path] = []
    for directory in dirs:
        if directory not in unique:
            unique.append(directory)
    return unique


def find_library(name: str, dirs: list[Path] | None = None) -> FoundLibrary | None:
    """Find library family ``name``; None if it is not installed anywhere we look."""
    names = LIBRARY_NAMES[name]
    for directory in dirs if dirs is not None else search_dirs():
        for filename in names:
            candidate = directory / filename
            if candidate.is_file():
                return FoundLibrary(name, str(candidate), str(directory))
    cache = _ldconfig_cache()
    for filename in names:
        if filename in cache:
            return FoundLibrary(name, cache[filename], "ldconfig cache")
    return None


def find_libraries() -> dict[str, FoundLibrary | None]:
    return {name: find_library(name) for name in LIBRARY_NAMES}


@lru_cache(maxsize=1)
def _ldconfig_cache() -> dict[str, str]:
    ldconfig = shutil.which("ldconfig") or ("/sbin/ldconfig" if os.path.exists("/sbin/ldconfig") else None)
    if ldconfig is None:
        return {}
    try:
        output = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    entries: dict[str, str] = {}
    for line in output.splitlines():
        match = re.match(r"\s*(\S+)\s+\(([^)]*)\)\s+=>\s+(\S+)", line)
        if match and ("x86-64" in match.group(2) or os.uname().machine not in ("x86_64",)):
            entries.setdefault(match.group(1), match.group(3))
    return entries


# --------------------------------------------------------------------------------------------
# numactl


@dataclass(frozen=True)
class NumactlStatus:
    path: str | None
    membind: bool  # a probe bound memory to an allowed node and ran
    reason: str  # why membind is False, or which node the probe used

    @property
    def found(self) -> bool:
        return self.path is not None

    def to_dict(self) -> dict[str, object]:
        return {"found": self.found, "path": self.path, "membind": self.membind, "detail": self.reason}


def probe_numactl(allowed_mems: tuple[int, ...]) -> NumactlStatus:
    """Check that ``numactl --membind`` works here, on a node this process may use.

    run_cpu probed CPU 0 / node 0 with ``hostname``, which fails in a container pinned to
    node 1 or without a hostname binary; we probe an allowed node with numactl itself.
    """
    path = shutil.which("numactl")
    if path is None:
        return NumactlStatus(None, False, "numactl is not installed (Debian: apt-get install numactl)")
    if not allowed_mems:
        return NumactlStatus(path, False, "no memory node is allowed to this process")
    node = allowed_mems[0]
    try:
        result = subprocess.run(
            [path, f"--membind={node}", "--", path, "--show"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return NumactlStatus(path, False, f"numactl probe failed to run: {error}")
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        why = detail[-1] if detail else f"exit status {result.returncode}"
        return NumactlStatus(
            path,
            False,
            f"numactl --membind={node} failed ({why}); in a container this usually needs "
            "--cap-add SYS_NICE",
        )
    return NumactlStatus(path, True, f"probe bound memory to node {node}")
