"""What a user asks of the CPU plan (``launchkit run``'s CPU flags, as one frozen value); the plan
itself is :mod:`launchkit.launch.plan`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from launchkit.core.errors import PlanError
from launchkit.core.values import parse_choice
from launchkit.launch.domains import CacheDomains


class CoreTypes(StrEnum):
    """Which cores of a hybrid part instances get."""

    AUTO = "auto"  # P-cores, with a note when E-cores are left out
    PERFORMANCE = "performance"
    EFFICIENCY = "efficiency"
    ALL = "all"


class Leftover(StrEnum):
    """What ``--ninstances N`` alone does with the cores that do not divide evenly."""

    SPREAD = "spread"  # one more core each to the first instances: no core idles
    IDLE = "idle"  # every instance the same size; the rest unused


@dataclass(frozen=True)
class CpuOptions:
    """The part of the launch options that decides CPUs (see ``launchkit run --help``)."""

    ninstances: int | None = None
    ncores_per_instance: int | None = None
    node_ids: tuple[int, ...] | None = None
    core_list: tuple[int, ...] | None = None
    use_logical_cores: bool = False
    latency_mode: bool = False
    throughput_mode: bool = False
    bind_numa_node: bool = False
    instance_indices: tuple[int, ...] | None = None
    core_types: CoreTypes = CoreTypes.AUTO
    leftover: Leftover = Leftover.SPREAD
    cache_domains: CacheDomains = CacheDomains.PACK
    # each instance runs on only the first N cores of its share, the rest left idle (no flag: how serve
    # runs a small model's worker, whose calls are too short for a team of threads to pay off)
    cores_used: int | None = None

    def __post_init__(self) -> None:  # words from a library caller become the enums, or a PlanError naming them
        for name, kind, flag in (("core_types", CoreTypes, "--core-types"), ("leftover", Leftover, "--leftover"),
                                 ("cache_domains", CacheDomains, "--cache-domains")):
            object.__setattr__(self, name, parse_choice(kind, getattr(self, name), flag, PlanError))
        if self.cores_used is not None and self.cores_used < 1:
            raise PlanError(f"cores_used must be at least 1, got {self.cores_used}")
