"""The environment of each instance: threads, OpenMP, allocator, LD_PRELOAD. Pure functions.

LD_PRELOAD order (documented in docs/launcher.md): launchkit's OpenMP runtime, then its allocator,
then the caller's own entries. The caller's entries that do not exist are dropped (with a
warning), duplicates (same file, or same library under another soname) are removed, and if the
caller already preloads an allocator or OpenMP runtime, theirs is kept and ours is not added.

A variable the caller already set wins over the one launchkit would set, and the plan says so;
the exception is torchrun's default ``OMP_NUM_THREADS=1``, which is a placeholder, not a choice.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from launchkit.core.cpulist import format_cpu_list
from launchkit.core.errors import UsageError
from launchkit.core.values import parse_choice
from launchkit.launch.libraries import FoundLibrary, library_family
from launchkit.launch.plan import InstancePlan

class Allocator(StrEnum):
    """``--memory-allocator``: which malloc the instances get preloaded."""

    AUTO = "auto"  # tcmalloc, else jemalloc, else the C library's
    DEFAULT = "default"  # the C library's malloc
    TCMALLOC = "tcmalloc"
    JEMALLOC = "jemalloc"


class OmpRuntime(StrEnum):
    """``--omp-runtime``: which OpenMP runtime the instances get (and so which variables tune it)."""

    AUTO = "auto"  # Intel's on x86 where installed, else GNU's
    INTEL = "intel"
    GNU = "gnu"


class WaitPolicy(StrEnum):
    """What OpenMP threads do when a parallel region ends (``--omp-wait``)."""

    SPIN = "spin"  # the runtime's own spin (GNU: 300,000 turns, ~ms): best for a busy training or batch job
    # spin about 10,000 turns (GNU's GOMP_SPINCOUNT; tens of microseconds), then sleep: a team stays
    # awake between one call's operators yet yields the CPU soon after a server worker's batch ends.
    # Intel's OpenMP counts its wait in whole milliseconds: there it is spin's 1 ms.
    BRIEF = "brief"
    PASSIVE = "passive"  # sleep at once: every operator pays for waking the team


BRIEF_SPIN_TURNS = "10000"  # benchmarks/threads.py: within one call as fast as GNU's default spin (docs/figures.md)


# jemalloc settings from PyTorch's CPU performance guide; all keys exist since jemalloc 5.1.
JEMALLOC_CONF = "oversize_threshold:1,background_thread:true,metadata_thp:auto"
KMP_AFFINITY = "granularity=fine,compact,1,0"
KMP_BLOCKTIME = "1"


def wait_policy_in(env: Mapping[str, str]) -> WaitPolicy:
    """Which policy an instance's variables give its OpenMP threads: the reverse of what
    :func:`instance_env` sets, for both runtimes (GNU: OMP_WAIT_POLICY, GOMP_SPINCOUNT; Intel:
    KMP_BLOCKTIME=0, where brief cannot be told from spin)."""
    if env.get("OMP_WAIT_POLICY") == "PASSIVE" or env.get("KMP_BLOCKTIME") == "0":
        return WaitPolicy.PASSIVE
    return WaitPolicy.BRIEF if env.get("GOMP_SPINCOUNT") == BRIEF_SPIN_TURNS else WaitPolicy.SPIN


_ALLOCATOR_FAMILIES = {"tcmalloc", "jemalloc"}
_OMP_FAMILIES = {"iomp5"}


@dataclass(frozen=True)
class RuntimeChoice:
    """Which allocator and OpenMP runtime the instances get, and the files that provide them."""

    allocator: Allocator  # tcmalloc | jemalloc | default (never auto: resolved)
    allocator_path: str | None
    omp_runtime: OmpRuntime  # intel | gnu (never auto)
    iomp_path: str | None
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, object]:
        return {
            "memory_allocator": self.allocator,
            "allocator_path": self.allocator_path,
            "omp_runtime": self.omp_runtime,
            "iomp5_path": self.iomp_path,
        }


@dataclass(frozen=True)
class InstanceEnv:
    set: dict[str, str]  # what launchkit sets for this instance
    notes: tuple[str, ...]
    warnings: tuple[str, ...]


def choose_runtime(
    allocator: str,
    omp_runtime: str,
    found: Mapping[str, FoundLibrary | None],
    machine: str | None = None,
) -> RuntimeChoice:
    """Resolve ``auto`` and check that explicitly requested libraries exist (words become the enums,
    or a UsageError naming the choices)."""
    machine = machine or platform.machine()
    notes: list[str] = []
    allocator = parse_choice(Allocator, allocator, "--memory-allocator")
    omp_runtime = parse_choice(OmpRuntime, omp_runtime, "--omp-runtime")

    chosen_allocator, allocator_path = Allocator.DEFAULT, None
    if allocator is Allocator.AUTO:
        for name in (Allocator.TCMALLOC, Allocator.JEMALLOC):
            library = found.get(name)
            if library is not None:
                chosen_allocator, allocator_path = name, library.path
                break
        else:
            notes.append("no tcmalloc or jemalloc found: using the C library's malloc "
                         "(Debian: apt-get install libtcmalloc-minimal4 or libjemalloc2)")
    elif allocator is not Allocator.DEFAULT:
        library = found.get(allocator)
        if library is None:
            package = "libtcmalloc-minimal4" if allocator is Allocator.TCMALLOC else "libjemalloc2"
            raise UsageError(
                f"--memory-allocator {allocator}: lib{allocator} was not found in the interpreter's "
                f"prefix, /usr/local, the system library directories or the ldconfig cache. Install it "
                f"(Debian: apt-get install {package}) or use --memory-allocator auto."
            )
        chosen_allocator, allocator_path = allocator, library.path

    iomp = found.get("iomp5")
    chosen_omp, iomp_path = OmpRuntime.GNU, None
    if omp_runtime is OmpRuntime.INTEL or (omp_runtime is OmpRuntime.AUTO and machine in ("x86_64", "AMD64")):
        if iomp is not None:
            chosen_omp, iomp_path = OmpRuntime.INTEL, iomp.path
        elif omp_runtime is OmpRuntime.INTEL:
            raise UsageError(
                "--omp-runtime intel: libiomp5.so was not found. Install it into this interpreter "
                "(pip install intel-openmp) or use --omp-runtime gnu."
            )
        else:
            notes.append("Intel OpenMP not found: using GNU OpenMP settings (pip install intel-openmp to use it)")
    return RuntimeChoice(chosen_allocator, allocator_path, chosen_omp, iomp_path, tuple(notes))


def instance_env(
    instance: InstancePlan,
    ninstances: int,
    runtime: RuntimeChoice,
    base: Mapping[str, str],
    exists: Callable[[str], bool] = os.path.exists,
    realpath: Callable[[str], str] = os.path.realpath,
    omp_wait: str = "spin",
) -> InstanceEnv:
    """The variables launchkit sets for one instance, given the caller's environment ``base``."""
    notes: list[str] = []
    warnings: list[str] = []
    wanted: dict[str, str] = {"OMP_NUM_THREADS": str(instance.threads)}
    if runtime.omp_runtime == "intel":
        wanted["KMP_AFFINITY"] = KMP_AFFINITY
        wanted["KMP_BLOCKTIME"] = "0" if omp_wait == "passive" else KMP_BLOCKTIME
    else:
        wanted["OMP_PROC_BIND"] = "close"
        wanted["OMP_PLACES"] = ",".join(f"{{{cpu}}}" for cpu in instance.cpus)
        if omp_wait == "passive":
            wanted["OMP_WAIT_POLICY"] = "PASSIVE"
        elif omp_wait == "brief":
            wanted["GOMP_SPINCOUNT"] = BRIEF_SPIN_TURNS
    if runtime.allocator == "jemalloc":
        wanted["MALLOC_CONF"] = JEMALLOC_CONF

    result: dict[str, str] = {}
    torchrun_default = "LOCAL_WORLD_SIZE" in base and base.get("OMP_NUM_THREADS") == "1"
    for key, value in wanted.items():
        preset = base.get(key)
        if preset is None or preset == value or (key == "OMP_NUM_THREADS" and torchrun_default):
            result[key] = value
        else:
            notes.append(f"{key}={preset} kept from your environment (launchkit would set {value})")

    preload, preload_notes, preload_warnings = _ld_preload(runtime, base.get("LD_PRELOAD", ""), exists, realpath)
    notes += preload_notes
    warnings += preload_warnings
    if preload != base.get("LD_PRELOAD", ""):
        result["LD_PRELOAD"] = preload
    result["LAUNCHKIT_INSTANCE_ID"] = str(instance.index)
    result["LAUNCHKIT_NUM_INSTANCES"] = str(ninstances)
    result["LAUNCHKIT_CPUS"] = format_cpu_list(instance.cpus)
    return InstanceEnv(result, tuple(notes), tuple(warnings))


def _ld_preload(
    runtime: RuntimeChoice,
    existing: str,
    exists: Callable[[str], bool],
    realpath: Callable[[str], str],
) -> tuple[str, list[str], list[str]]:
    notes: list[str] = []
    warnings: list[str] = []
    user_entries: list[str] = []
    for entry in existing.replace(" ", ":").split(":"):
        if not entry:
            continue
        # A bare soname ("libfoo.so.1") is resolved by the dynamic loader; only paths can be checked.
        if "/" in entry and not exists(entry):
            warnings.append(f"LD_PRELOAD entry {entry} does not exist: not passed on")
            continue
        user_entries.append(entry)
    user_families = {family for entry in user_entries if (family := library_family(entry)) is not None}

    ours: list[str] = []
    for path, family_set, what in (
        (runtime.iomp_path, _OMP_FAMILIES, "OpenMP runtime"),
        (runtime.allocator_path, _ALLOCATOR_FAMILIES, "allocator"),
    ):
        if path is None:
            continue
        clash = user_families & family_set
        if clash:
            notes.append(f"your LD_PRELOAD already has the {what} {sorted(clash)[0]}: kept it, did not add {path}")
            continue
        ours.append(path)

    seen: set[str] = set()
    ordered: list[str] = []
    for entry in ours + user_entries:
        key = realpath(entry) if "/" in entry else entry
        if key in seen:
            continue
        seen.add(key)
        ordered.append(entry)
    return ":".join(ordered), notes, warnings
