"""Pools of cores, from launchkit's topology: real NUMA nodes, the process's allowed CPUs, one CPU
per physical core (hardware-thread siblings are left out unless named).

Inside a `launchkit run` instance or a serving worker, the allowed CPUs are the instance's
(``LAUNCHKIT_CPUS``): by the time a pool is made, the OpenMP runtime may have bound the main
thread to one of them (``OMP_PROC_BIND``), and that one CPU is not what the process may use."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterable

from launchkit.core.cpulist import format_cpu_list, parse_cpu_list
from launchkit.core.errors import InvalidArgument, WrongArgumentType
from launchkit.core.topology import Topology, read_topology


@functools.lru_cache(maxsize=1)
def _topology() -> Topology:
    """Read once, when the first pool is made: later the calling thread may be pinned to a pool,
    and its narrower mask must not shrink what the process may use."""
    topology = read_topology()
    instance = os.environ.get("LAUNCHKIT_CPUS")
    if instance:
        cpus = tuple(cpu for cpu in parse_cpu_list(instance) if cpu in topology.online_cpus)
        if cpus:
            topology = dataclasses.replace(topology, allowed_cpus=cpus, allowed_source="LAUNCHKIT_CPUS")
    return topology


def _physical(topology: Topology, node_id: int | None = None) -> list[int]:
    """The first allowed CPU of every allowed physical core (of ``node_id``), in CPU order."""
    return sorted(core.cpus[0] for core in topology.allowed_cores if node_id is None or core.node == node_id)


def get_core_list_of_node_id(node_id: int) -> list[int]:
    """One CPU per allowed physical core of NUMA node ``node_id`` (a real NUMA node, not a socket)."""
    topology = _topology()
    if not isinstance(node_id, int) or isinstance(node_id, bool) or topology.node(node_id) is None:
        nodes = ", ".join(str(node.id) for node in topology.nodes)
        raise InvalidArgument(f"NUMA node {node_id!r} does not exist; this machine's nodes: {nodes}")
    cores = _physical(topology, node_id)
    if not cores:
        raise InvalidArgument(f"NUMA node {node_id} has no core this process may use ({topology.describe_allowed()})")
    return cores


class CPUPool:
    """A set of cores for :class:`~launchkit.runtime.pin`, tasks and streams.

    ``CPUPool()``: every allowed physical core; ``CPUPool(node_id=N)``: those of NUMA node N;
    ``CPUPool(core_ids=[...])``: exactly these CPUs, which must be allowed to this process."""

    def __init__(self, core_ids: Iterable[int] | None = None, node_id: int | None = None) -> None:
        if core_ids is not None and node_id is not None:
            raise InvalidArgument("CPUPool takes core_ids or node_id, not both")
        if core_ids is None:
            cores = get_core_list_of_node_id(node_id) if node_id is not None else _physical(_topology())
            if not cores:
                raise InvalidArgument("this process may use no core (its CPU mask is empty)")
        else:
            cores = list(core_ids)
            if not cores:
                raise InvalidArgument("CPUPool(core_ids=[]) is empty: name at least one CPU")
            if not all(isinstance(core, int) and not isinstance(core, bool) for core in cores):
                raise WrongArgumentType(f"CPUPool core_ids must be CPU numbers, got {cores!r}")
            if len(set(cores)) != len(cores):
                raise InvalidArgument(f"CPUPool core_ids name a CPU twice: {cores}")
            topology = _topology()
            outside = sorted(set(cores) - set(topology.allowed_cpus))
            if outside:
                raise InvalidArgument(f"CPUs {format_cpu_list(outside)} are outside what this process may use "
                                 f"({topology.describe_allowed()}); a pool cannot widen the process's mask")
        self.core_ids: list[int] = cores
        self.node_id = node_id

    def __len__(self) -> int:
        return len(self.core_ids)

    def split(self, parts: int) -> list["CPUPool"]:
        """``parts`` pools of consecutive cores, sizes as even as can be (the first ones get one more)."""
        size, extra = divmod(len(self.core_ids), parts)
        pools, start = [], 0
        for index in range(parts):
            end = start + size + (1 if index < extra else 0)
            pool = CPUPool.__new__(CPUPool)
            pool.core_ids, pool.node_id = self.core_ids[start:end], self.node_id
            pools.append(pool)
            start = end
        return pools

    def __repr__(self) -> str:
        return f"CPUPool(core_ids=[{format_cpu_list(self.core_ids)}])"
