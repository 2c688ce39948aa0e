"""L3 domains in the CPU plan: which cores share a last-level cache, and which instances cross one. Pure.

A *domain* is the cores of one NUMA node that share one L3 cache: an AMD CCD or CCX (4 or 8
cores), an Intel socket's L3 cut by its sub-NUMA nodes (SNC-2, SNC-4). Where the kernel reports
no L3, the node is the domain. The planner orders cores by (socket, node, L3, id), so instances
that divide the domains evenly (8 instances on 8 domains, 4-core instances on 8-core domains)
already lie within one each; this module names the instances that do not, and gives the
``whole`` policy its groups.

Policies (``--cache-domains``):

* ``pack`` (default): instances are contiguous runs in that order and no core idles; an instance
  whose size does not divide its domain's (6 cores on 8-core domains) spans two.
* ``whole``: no instance takes part of a domain together with another domain. Sizes that do not
  divide a domain leave the rest of it idle; with fewer instances than domains, each instance takes
  whole domains.

The default is ``pack`` because its cost is certain and visible (every core works) while the cost
of spanning depends on the model's working set (weights and activations that fit one L3 or not)
and has not been measured on a machine with several L3 domains per node: the lent machine has one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Protocol, TypeVar

from launchkit.core.cpulist import format_cpu_list
from launchkit.core.errors import PlanError



class CacheDomains(StrEnum):
    """Whether an instance may take part of one L3 domain and part of another."""

    PACK = "pack"  # instances take contiguous runs of cores; the notes name those that straddle domains
    WHOLE = "whole"  # instances are whole domains, or parts of one


class Placed(Protocol):
    """A unit of allocation as the planner holds it: its node and its L3 domain (lowest CPU id)."""

    @property
    def node(self) -> int: ...

    @property
    def l3(self) -> int | None: ...


U = TypeVar("U", bound=Placed)


def domain_of(unit: Placed) -> tuple[int, int]:
    """The unit's domain: (node, L3); a node without L3 information is one domain."""
    return unit.node, -1 if unit.l3 is None else unit.l3


def group_by_domain(units: Sequence[U]) -> list[list[U]]:
    """The units in domains, in the order the units come (the planner's order)."""
    groups: dict[tuple[int, int], list[U]] = {}
    for unit in units:
        groups.setdefault(domain_of(unit), []).append(unit)
    return list(groups.values())


def whole_domains(groups: list[list[U]], count: int) -> list[list[U]]:
    """``count`` instances of whole domains (fewer instances than domains), in order, shared evenly."""
    size, extra = divmod(len(groups), count)
    result, start = [], 0
    for index in range(count):
        length = size + (1 if index < extra else 0)
        result.append([unit for group in groups[start : start + length] for unit in group])
        start += length
    return result


def spanning(slices: Sequence[Sequence[Placed]], pool: Sequence[Placed]) -> list[int]:
    """Indices of the instances that take part of a domain and also another domain."""
    sizes: dict[tuple[int, int], int] = {}
    for unit in pool:
        sizes[domain_of(unit)] = sizes.get(domain_of(unit), 0) + 1
    result = []
    for index, chosen in enumerate(slices):
        held: dict[tuple[int, int], int] = {}
        for unit in chosen:
            held[domain_of(unit)] = held.get(domain_of(unit), 0) + 1
        if len(held) > 1 and any(count < sizes[domain] for domain, count in held.items()):
            result.append(index)
    return result


def describe(pool: Sequence[Placed]) -> str:
    """'8 L3 domains of 8 cores' or '3 L3 domains of 6, 8 and 8 cores'."""
    sizes = [len(group) for group in group_by_domain(pool)]
    if len(set(sizes)) == 1:
        return f"{len(sizes)} L3 domains of {sizes[0]} cores"
    return f"{len(sizes)} L3 domains of {', '.join(map(str, sizes[:-1]))} and {sizes[-1]} cores"


def whole_domains_within_nodes(groups: list[list[U]], count: int, bind_numa_node: bool) -> list[list[U]]:
    """:func:`whole_domains`, refused where ``--bind-numa-node`` forbids an instance two nodes' domains."""
    slices = whole_domains(groups, count)
    if bind_numa_node and any(len({unit.node for unit in chosen}) > 1 for chosen in slices):
        nodes = len({unit.node for group in groups for unit in group})
        raise PlanError(f"{count} instances of whole L3 domains cannot each stay on one NUMA node here "
                        f"({len(groups)} domains on {nodes} nodes); use a multiple of {nodes} instances, "
                        "or drop --bind-numa-node or --cache-domains whole")
    return slices


def notes(pool: Sequence[Placed], slices: Sequence[Sequence[Placed]], idle: int,
          whole: Callable[[], tuple[int, Sequence[int]]]) -> list[str]:
    """What --dry-run says of L3 domains: whether every instance lies within one, and what ``whole`` costs.

    ``whole`` plans the same request with ``--cache-domains whole`` (its instance count and idle CPUs); called only
    where some instance spans domains, and a PlanError from it is said, not raised.
    """
    if len(group_by_domain(pool)) < 2:
        return []
    where = describe(pool)
    crossing = spanning(slices, pool)
    if not crossing:
        return [f"{where}: no instance takes part of one and part of another"]
    note = (f"{where}: instance(s) {format_cpu_list(crossing)} take part of one and part of another "
            "(--cache-domains pack: no core idles)")
    try:
        count, whole_idle = whole()
    except PlanError as error:
        return [f"{note}; --cache-domains whole cannot: {error}"]
    return [f"{note}; --cache-domains whole keeps each within one: {count} instance(s), "
            f"{len(whole_idle) - idle:+d} idle CPUs"]
