"""Which CPUs and memory nodes each instance gets: a pure function of Topology + options.

Rules (they are the documented behaviour of ``launchkit run``):

* The pool starts from the CPUs this process may use (affinity ∩ cgroup cpuset), never more.
* The unit of allocation is a physical core, and sizes (``--ncores-per-instance``) count
  physical cores. Without ``--use-logical-cores`` an instance gets the first allowed hardware
  thread of each of its cores; with it, all allowed siblings, which stay together. Two instances
  never share a physical core.
* ``--core-list`` names exact CPUs (all of them are used, siblings grouped by core);
  ``--node-id`` confines the pool to those nodes; on hybrid parts only P-cores are used unless
  ``--core-types`` says otherwise.
* Cores are ordered by socket, NUMA node, L3 domain, CPU id; instances take contiguous runs.
* Leftover policy, ``--ninstances N`` alone: ``spread`` (default) hands the remainder out one
  core each to the first instances, so no core idles; ``idle`` gives every instance the same
  size and leaves the rest unused. With ``--ncores-per-instance`` the remainder always idles.
* ``--bind-numa-node`` (alias ``--skip-cross-node-cores``): no instance spans nodes; instances
  are shared out among nodes in proportion to their size.
* ``--cache-domains pack|whole``: whether an instance may take part of one L3 domain and part of
  another (see :mod:`launchkit.launch.domains`); the notes name the instances that do.
* Impossible requests raise :class:`PlanError` naming what is possible instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from launchkit.core.cpulist import format_cpu_list
from launchkit.core.errors import PlanError
from launchkit.core.topology import PhysicalCore, Topology
from launchkit.launch import domains
from launchkit.launch.cpu_options import CoreTypes, CpuOptions, Leftover
from launchkit.launch.domains import CacheDomains

LATENCY_CORES_PER_INSTANCE = 4


@dataclass(frozen=True)
class InstancePlan:
    index: int
    cores: tuple[tuple[int, ...], ...]  # per physical core, the CPUs this instance uses on it
    nodes: tuple[int, ...]  # NUMA nodes its CPUs sit on
    mem_nodes: tuple[int, ...]  # nodes its memory may be bound to (allowed, with memory)
    threads: int  # OpenMP threads it should run

    @property
    def cpus(self) -> tuple[int, ...]:
        return tuple(sorted(cpu for core in self.cores for cpu in core))


@dataclass(frozen=True)
class CpuPlan:
    ninstances: int  # instances in the whole split (LAUNCHKIT_NUM_INSTANCES)
    instances: tuple[InstancePlan, ...]  # the ones to run (all, or those --rank selected)
    idle_cpus: tuple[int, ...]  # allowed CPUs of the pool no instance uses
    notes: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class _Unit:
    cpus: tuple[int, ...]
    node: int
    l3: int | None = None


def plan_cpus(topology: Topology, options: CpuOptions, environ: Mapping[str, str] | None = None) -> CpuPlan:
    """Split the allowed CPUs among instances. ``environ`` supplies torchrun's LOCAL_RANK etc."""
    environ = environ or {}
    notes: list[str] = []
    warnings: list[str] = []
    units = _pool(topology, options, notes)
    groups, per_core, count = _sizing(options, units, notes, warnings)
    slices = _split(groups, count, per_core, options.leftover, topology, options)
    used = {cpu for chosen in slices for unit in chosen for cpu in unit.cpus}
    idle = tuple(sorted({cpu for unit in units for cpu in unit.cpus} - used))
    if idle:
        notes.append(f"CPUs {format_cpu_list(idle)} are left idle (leftover policy '{options.leftover}'"
                     f"{', cache domains whole' if options.cache_domains is CacheDomains.WHOLE else ''})")
    if len(slices) > 1:
        notes += domains.notes(units, slices, len(idle), lambda: _count_and_idle(plan_cpus(topology, replace(
            options, cache_domains=CacheDomains.WHOLE, instance_indices=None))))

    local = _torchrun_slice(environ)
    instances = []
    for index, chosen in enumerate(slices):
        if local is not None:
            chosen = _slice_for_local_rank(chosen, *local, index)
        if options.cores_used is not None:
            chosen = chosen[:options.cores_used]
        instances.append(_instance(index, chosen, topology, warnings))
    if options.cores_used is not None and any(len(chosen) > options.cores_used for chosen in slices):
        notes.append(f"each instance runs on the first {options.cores_used} core(s) of its share; the rest of "
                     "the share stays unused")
    if local is not None:
        notes.append(
            f"torchrun LOCAL_RANK={local[0]} of LOCAL_WORLD_SIZE={local[1]}: each instance keeps "
            "its share of cores, and OMP_NUM_THREADS counts only that share"
        )
    instances = _apply_quota(topology, instances, warnings)
    selected = _select(instances, options.instance_indices)
    return CpuPlan(len(instances), tuple(selected), idle, tuple(notes), tuple(warnings))


# --------------------------------------------------------------------------------------------
# The pool


def _pool(topology: Topology, options: CpuOptions, notes: list[str]) -> list[_Unit]:
    cores = list(topology.allowed_cores)
    if options.core_list is not None:
        cores = _restrict_to_core_list(topology, cores, options.core_list)
    if options.node_ids is not None:
        cores = _restrict_to_nodes(topology, cores, options.node_ids)
    if options.core_list is None:
        cores = _restrict_to_core_types(topology, cores, options.core_types, notes)
    cores.sort(key=lambda core: (core.socket, core.node, -1 if core.l3 is None else core.l3, core.first))
    logical = options.use_logical_cores or options.core_list is not None
    return [_Unit(core.cpus if logical else core.cpus[:1], core.node, core.l3) for core in cores]


def _restrict_to_core_list(
    topology: Topology, cores: list[PhysicalCore], core_list: tuple[int, ...]
) -> list[PhysicalCore]:
    if not core_list:
        raise PlanError("--core-list is empty; give CPU ids such as '0-3,8'")
    allowed = set(topology.allowed_cpus)
    outside = sorted(set(core_list) - allowed)
    if outside:
        offline = sorted(set(outside) - set(topology.online_cpus))
        detail = f" ({format_cpu_list(offline)} not online)" if offline else ""
        raise PlanError(
            f"--core-list names CPUs {format_cpu_list(outside)}{detail} that this process may not use; "
            f"the allowed CPUs are {topology.describe_allowed()}. Pick the list from those."
        )
    wanted = set(core_list)
    result = []
    for core in cores:
        cpus = tuple(cpu for cpu in core.cpus if cpu in wanted)
        if cpus:
            result.append(PhysicalCore(cpus, core.socket, core.node, core.l3, core.kind))
    return result


def _restrict_to_nodes(topology: Topology, cores: list[PhysicalCore], node_ids: tuple[int, ...]) -> list[PhysicalCore]:
    existing = [node.id for node in topology.nodes]
    usable = sorted({core.node for core in topology.allowed_cores})
    for node_id in node_ids:
        node = topology.node(node_id)
        if node is None:
            raise PlanError(
                f"NUMA node {node_id} does not exist; this machine has nodes {format_cpu_list(existing)}. "
                f"Nodes with CPUs you may use: {format_cpu_list(usable)}."
            )
        if not node.cpus:
            raise PlanError(
                f"NUMA node {node_id} has no CPUs (a memory-only node); nodes with CPUs you may use: "
                f"{format_cpu_list(usable)}."
            )
        if node_id not in usable:
            raise PlanError(
                f"NUMA node {node_id} (CPUs {format_cpu_list(node.cpus)}) has no CPU this process may use; "
                f"allowed: {topology.describe_allowed()}, on nodes {format_cpu_list(usable)}."
            )
    chosen = set(node_ids)
    result = [core for core in cores if core.node in chosen]
    if not result:
        raise PlanError(
            f"--core-list and --node-id {format_cpu_list(node_ids)} have no CPU in common; "
            "drop one of them or make them agree."
        )
    return result


def _restrict_to_core_types(
    topology: Topology, cores: list[PhysicalCore], core_types: CoreTypes, notes: list[str]
) -> list[PhysicalCore]:
    if not topology.is_hybrid or core_types is CoreTypes.ALL:
        return cores
    wanted = CoreTypes.PERFORMANCE if core_types is CoreTypes.AUTO else core_types
    kept = [core for core in cores if core.kind == wanted]
    if not kept:
        if core_types is CoreTypes.AUTO:
            return cores
        raise PlanError(f"no allowed {wanted} cores on this machine; use --core-types all")
    dropped = [cpu for core in cores if core.kind != wanted for cpu in core.cpus]
    if dropped and core_types is CoreTypes.AUTO:
        notes.append(
            f"hybrid CPU: using P-cores only, E-core CPUs {format_cpu_list(dropped)} left out "
            "(one slow core gates every OpenMP barrier); --core-types all uses them too"
        )
    return kept


# --------------------------------------------------------------------------------------------
# How many instances, how big


def _sizing(
    options: CpuOptions, units: list[_Unit], notes: list[str], warnings: list[str]
) -> tuple[list[list[_Unit]], int | None, int | None]:
    """Return (groups, cores per instance, instance count); None means "derive it"."""
    if options.latency_mode and options.throughput_mode:
        raise PlanError("--latency-mode and --throughput-mode contradict each other; pick one")
    count, per_core = options.ninstances, options.ncores_per_instance
    per_node = options.bind_numa_node
    if options.latency_mode or options.throughput_mode:
        mode = "--latency-mode" if options.latency_mode else "--throughput-mode"
        if count is not None or per_core is not None:
            warnings.append(f"{mode} decides the instance count and size; --ninstances/--ncores-per-instance ignored")
        per_node = True
        count = None
        per_core = LATENCY_CORES_PER_INSTANCE if options.latency_mode else None
    groups = domains.group_by_domain(units) if options.cache_domains is CacheDomains.WHOLE else _by_node(units) if per_node \
        else [units]
    if options.latency_mode:
        largest = max(len(group) for group in groups)
        if largest < LATENCY_CORES_PER_INSTANCE:
            per_core = largest
            warnings.append(
                f"--latency-mode wants {LATENCY_CORES_PER_INSTANCE} cores per instance but the largest "
                f"pool has {largest}; using {largest} per instance"
            )
    if count is None and per_core is None and per_node:
        count = len(groups)
        notes.append(f"one instance per {'L3 domain' if options.cache_domains is CacheDomains.WHOLE else 'NUMA node'} ({count})")
    return groups, per_core, count


def _by_node(units: list[_Unit]) -> list[list[_Unit]]:
    groups: dict[int, list[_Unit]] = {}
    for unit in units:
        groups.setdefault(unit.node, []).append(unit)
    return list(groups.values())


def _split(
    groups: list[list[_Unit]],
    count: int | None,
    per_core: int | None,
    leftover: Leftover,
    topology: Topology,
    options: CpuOptions,
) -> list[list[_Unit]]:
    total = sum(len(group) for group in groups)
    unit_word = "physical cores"
    where = _pool_words(groups, unit_word)
    if total == 0:
        raise PlanError(f"no CPU is left to run on: {where}; allowed are {topology.describe_allowed()}")
    if count is None and per_core is None:
        return [[unit for group in groups for unit in group]]
    if per_core is not None:
        capacity = [len(group) // per_core for group in groups]
        possible = sum(capacity)
        if possible == 0:
            largest = max(len(group) for group in groups)
            raise PlanError(
                f"--ncores-per-instance {per_core} does not fit: {where}. "
                f"Use --ncores-per-instance {largest} or fewer."
            )
        if count is None:
            count = possible
        if count > possible:
            raise PlanError(
                f"{count} instances × {per_core} cores do not fit: {where}, room for {possible} "
                f"instance(s) of {per_core}. Lower --ninstances or --ncores-per-instance."
            )
        return _take_slots(groups, capacity, count, per_core)
    assert count is not None
    if options.cache_domains is CacheDomains.WHOLE and len(groups) > 1 and count < len(groups):
        return domains.whole_domains_within_nodes(groups, count, options.bind_numa_node)
    if count > total:
        raise PlanError(
            f"{count} instances need at least {count} {unit_word} (instances never share a core), "
            f"but {where}. Use --ninstances {total} or fewer."
        )
    shares = _proportional(count, [len(group) for group in groups])
    result: list[list[_Unit]] = []
    for group, share in zip(groups, shares):
        result.extend(_even_split(group, share, leftover))
    return result


def _count_and_idle(plan: CpuPlan) -> tuple[int, tuple[int, ...]]:
    return plan.ninstances, plan.idle_cpus


def _pool_words(groups: list[list[_Unit]], unit_word: str) -> str:
    total = sum(len(group) for group in groups)
    if len(groups) == 1:
        return f"the pool has {total} {unit_word}"
    sizes = ", ".join(f"node {group[0].node}: {len(group)}" for group in groups)
    return f"the pool has {total} {unit_word} ({sizes}) and instances may not span nodes"


def _take_slots(groups: list[list[_Unit]], capacity: list[int], count: int, per_core: int) -> list[list[_Unit]]:
    """Pick ``count`` slots of ``per_core`` units, round-robin over groups (spreads memory traffic)."""
    taken = [0] * len(groups)
    order: list[tuple[int, int]] = []
    while len(order) < count:
        for g, group_capacity in enumerate(capacity):
            if taken[g] < group_capacity and len(order) < count:
                order.append((g, taken[g]))
                taken[g] += 1
    order.sort()
    return [groups[g][slot * per_core : (slot + 1) * per_core] for g, slot in order]


def _proportional(count: int, sizes: list[int]) -> list[int]:
    """Share ``count`` instances among groups in proportion to size (largest remainder), ≤ size each."""
    total = sum(sizes)
    exact = [count * size / total for size in sizes]
    shares = [min(int(value), size) for value, size in zip(exact, sizes)]
    by_remainder = sorted(range(len(sizes)), key=lambda g: (-(exact[g] - int(exact[g])), g))
    while sum(shares) < count:
        for g in by_remainder:
            if sum(shares) < count and shares[g] < sizes[g]:
                shares[g] += 1
    return shares


def _even_split(group: list[_Unit], count: int, leftover: Leftover) -> list[list[_Unit]]:
    if count == 0:
        return []
    size, extra = divmod(len(group), count)
    if leftover is Leftover.IDLE:
        extra = 0
    result, start = [], 0
    for index in range(count):
        length = size + (1 if index < extra else 0)
        result.append(group[start : start + length])
        start += length
    return result


# --------------------------------------------------------------------------------------------
# Per instance


def _instance(index: int, units: list[_Unit], topology: Topology, warnings: list[str]) -> InstancePlan:
    nodes = tuple(sorted({unit.node for unit in units}))
    allowed_mems = set(topology.allowed_mems)
    mem_nodes = tuple(node for node in nodes if node in allowed_mems)
    if not mem_nodes:
        warnings.append(
            f"instance {index}: its CPUs' nodes {format_cpu_list(nodes)} have no memory this process may "
            "use; its memory is not bound"
        )
    cores = tuple(unit.cpus for unit in units)
    return InstancePlan(index, cores, nodes, mem_nodes, sum(len(core) for core in cores))


def _torchrun_slice(environ: Mapping[str, str]) -> tuple[int, int] | None:
    try:
        world = int(environ.get("LOCAL_WORLD_SIZE", "1"))
        rank = int(environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise PlanError("LOCAL_RANK / LOCAL_WORLD_SIZE are set but are not integers") from None
    if world <= 1:
        return None
    if not 0 <= rank < world:
        raise PlanError(f"LOCAL_RANK={rank} is outside LOCAL_WORLD_SIZE={world}")
    return rank, world


def _slice_for_local_rank(units: list[_Unit], rank: int, world: int, index: int) -> list[_Unit]:
    per = len(units) // world
    if per == 0:
        raise PlanError(
            f"instance {index} has {len(units)} cores, fewer than torchrun's LOCAL_WORLD_SIZE={world}; "
            "give each instance more cores or run fewer local ranks"
        )
    return units[per * rank : per * (rank + 1)]


def _apply_quota(topology: Topology, instances: list[InstancePlan], warnings: list[str]) -> list[InstancePlan]:
    """Under a CPU quota, more threads than the quota only buys CFS throttling: scale them down."""
    quota = topology.cpu_quota
    total = sum(instance.threads for instance in instances)
    if quota is None or total <= quota:
        return instances
    scaled = [
        InstancePlan(i.index, i.cores, i.nodes, i.mem_nodes, max(1, int(i.threads * quota / total)))
        for i in instances
    ]
    warnings.append(
        f"CPU quota is {quota:g} CPUs ({topology.quota_source}) but the plan has {total} CPUs: "
        f"OpenMP threads scaled down to {sum(i.threads for i in scaled)} in total to avoid throttling"
    )
    return scaled


def _select(instances: list[InstancePlan], indices: tuple[int, ...] | None) -> list[InstancePlan]:
    if indices is None:
        return instances
    outside = [i for i in indices if i >= len(instances)]
    if outside:
        raise PlanError(
            f"--rank/--instance-idx {format_cpu_list(outside)} is out of range: the plan has "
            f"{len(instances)} instance(s), numbered 0-{len(instances) - 1}"
        )
    if not indices:
        raise PlanError("--rank/--instance-idx selects no instance")
    return [instances[i] for i in indices]
