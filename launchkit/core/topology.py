"""What the machine is, and what this process may use of it.

Everything is read from sysfs/procfs under a root directory (``/`` for the live machine, a
recorded tree under ``tests/fixtures/`` for machines we do not have), never from ``lscpu``:
lscpu ignores the affinity mask, and its Core column is not a CPU id (the run_cpu bug).
This module never imports torch.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from launchkit.core.cpulist import format_cpu_list, parse_cpu_list
from launchkit.core.errors import CpuListError, TopologyError

ROOT_ENV = "LAUNCHKIT_TOPOLOGY_ROOT"


@dataclass(frozen=True)
class PhysicalCore:
    """One physical core: its hardware threads (online siblings), where it sits, what kind it is."""

    cpus: tuple[int, ...]
    socket: int
    node: int
    l3: int | None = None  # lowest CPU id sharing this core's L3 cache, None if unknown
    kind: str | None = None  # "performance" / "efficiency" on hybrid parts, else None

    @property
    def first(self) -> int:
        return self.cpus[0]


@dataclass(frozen=True)
class NumaNode:
    id: int
    cpus: tuple[int, ...]  # online CPUs of the node, allowed or not
    memory_kb: int | None = None  # None where meminfo is missing (VMs, recorded trees)

    @property
    def has_memory(self) -> bool:
        return self.memory_kb is None or self.memory_kb > 0


@dataclass(frozen=True)
class Topology:
    """An immutable description of the machine and of this process's share of it."""

    root: str
    online_cpus: tuple[int, ...]
    cores: tuple[PhysicalCore, ...]  # every online physical core, allowed or not
    nodes: tuple[NumaNode, ...]
    allowed_cpus: tuple[int, ...]
    allowed_mems: tuple[int, ...]
    allowed_source: str
    cpu_quota: float | None = None  # CPUs' worth of time per period (cgroup cpu.max), None = unlimited
    quota_source: str | None = None
    notes: tuple[str, ...] = field(default=())  # what was missing or odd while reading

    @cached_property
    def allowed_cores(self) -> tuple[PhysicalCore, ...]:
        """Physical cores with at least one allowed CPU, each holding only its allowed CPUs."""
        allowed = set(self.allowed_cpus)
        result = []
        for core in self.cores:
            cpus = tuple(cpu for cpu in core.cpus if cpu in allowed)
            if cpus:
                result.append(PhysicalCore(cpus, core.socket, core.node, core.l3, core.kind))
        return tuple(result)

    @property
    def sockets(self) -> tuple[int, ...]:
        return tuple(sorted({core.socket for core in self.cores}))

    @property
    def threads_per_core(self) -> int:
        return max((len(core.cpus) for core in self.cores), default=1)

    @property
    def is_hybrid(self) -> bool:
        return any(core.kind is not None for core in self.cores)

    @property
    def core_types(self) -> dict[str, list[int]] | None:
        if not self.is_hybrid:
            return None
        kinds: dict[str, list[int]] = {}
        for core in self.cores:
            kinds.setdefault(core.kind or "unknown", []).extend(core.cpus)
        return {kind: sorted(cpus) for kind, cpus in sorted(kinds.items())}

    @property
    def l3_domains(self) -> dict[int, tuple[int, ...]]:
        domains: dict[int, list[int]] = {}
        for core in self.cores:
            if core.l3 is not None:
                domains.setdefault(core.l3, []).extend(core.cpus)
        return {key: tuple(sorted(cpus)) for key, cpus in sorted(domains.items())}

    def node(self, node_id: int) -> NumaNode | None:
        return next((node for node in self.nodes if node.id == node_id), None)

    def describe_allowed(self) -> str:
        return f"CPUs {format_cpu_list(self.allowed_cpus)} ({self.allowed_source})"


# --------------------------------------------------------------------------------------------
# Reading


def read_topology(root: str | os.PathLike[str] | None = None) -> Topology:
    """Read the topology under ``root``; default: ``$LAUNCHKIT_TOPOLOGY_ROOT`` or ``/``."""
    root_text = str(root) if root is not None else os.environ.get(ROOT_ENV) or "/"
    return _Reader(Path(root_text)).read()


class _Reader:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.live = root.resolve() == Path("/")
        self.notes: list[str] = []
        self.cpu_dir = root / "sys/devices/system/cpu"
        self.node_dir = root / "sys/devices/system/node"

    def read(self) -> Topology:
        if not self.cpu_dir.is_dir():
            raise TopologyError(
                f"{self.cpu_dir} does not exist: {self.root} does not look like a system root. "
                "Pass the directory that contains sys/devices/system/cpu (or unset "
                f"{ROOT_ENV})."
            )
        online = self._online_cpus()
        nodes = self._nodes(online)
        node_of = {cpu: node.id for node in nodes for cpu in node.cpus}
        kind_of = self._hybrid_kinds()
        cores = self._cores(online, node_of, kind_of)
        allowed, source = self._allowed_cpus(online)
        mems = self._allowed_mems(nodes)
        quota, quota_source = self._cpu_quota()
        return Topology(
            root=str(self.root),
            online_cpus=online,
            cores=cores,
            nodes=nodes,
            allowed_cpus=allowed,
            allowed_mems=mems,
            allowed_source=source,
            cpu_quota=quota,
            quota_source=quota_source,
            notes=tuple(self.notes),
        )

    # -- small file helpers ------------------------------------------------------------------

    def _text(self, path: Path) -> str | None:
        try:
            return path.read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None

    def _list(self, path: Path) -> tuple[int, ...] | None:
        text = self._text(path)
        return None if text is None else self._parse(text, str(path))

    def _parse(self, text: str, where: str) -> tuple[int, ...] | None:
        try:
            return parse_cpu_list(text, what=where)
        except CpuListError as error:
            self.notes.append(f"ignored unreadable {where}: {error}")
            return None

    def _int(self, path: Path) -> int | None:
        text = self._text(path)
        try:
            return int(text) if text is not None else None
        except ValueError:
            return None

    # -- CPUs and cores ----------------------------------------------------------------------

    def _online_cpus(self) -> tuple[int, ...]:
        online = self._list(self.cpu_dir / "online")
        present = tuple(
            sorted(
                int(entry.name[3:])
                for entry in self.cpu_dir.iterdir()
                if re.fullmatch(r"cpu\d+", entry.name)
            )
        )
        if online is None:
            self.notes.append("no sys/devices/system/cpu/online: taking every cpuN directory as online")
            online = tuple(cpu for cpu in present if self._text(self.cpu_dir / f"cpu{cpu}/online") != "0")
        if not online:
            raise TopologyError(f"no online CPUs found under {self.cpu_dir}")
        return online

    def _cores(
        self, online: tuple[int, ...], node_of: dict[int, int], kind_of: dict[int, str]
    ) -> tuple[PhysicalCore, ...]:
        online_set = set(online)
        groups: dict[tuple, list[int]] = {}
        sockets: dict[int, int] = {}
        l3_of: dict[int, int | None] = {}
        missing_topology = False
        for cpu in online:
            topo = self.cpu_dir / f"cpu{cpu}/topology"
            siblings = self._list(topo / "thread_siblings_list") or self._list(topo / "core_cpus_list")
            package = self._int(topo / "physical_package_id")
            sockets[cpu] = package if package is not None and package >= 0 else 0
            if siblings:
                key: tuple = ("siblings", tuple(c for c in siblings if c in online_set) or (cpu,))
            else:
                core_id = self._int(topo / "core_id")
                die = self._int(topo / "die_id") or 0
                missing_topology = True
                key = ("core_id", sockets[cpu], die, core_id) if core_id is not None else ("cpu", cpu)
            groups.setdefault(key, []).append(cpu)
            l3_of[cpu] = self._l3_domain(cpu)
        if missing_topology:
            self.notes.append("thread_siblings_list missing for some CPUs: grouped them by core_id where known, else one core per CPU")
        cores = []
        for cpus in groups.values():
            cpus.sort()
            first = cpus[0]
            cores.append(
                PhysicalCore(
                    cpus=tuple(cpus),
                    socket=sockets[first],
                    node=node_of.get(first, 0),
                    l3=l3_of[first],
                    kind=kind_of.get(first),
                )
            )
        cores.sort(key=lambda core: (core.socket, core.node, core.first))
        return tuple(cores)

    def _l3_domain(self, cpu: int) -> int | None:
        cache_dir = self.cpu_dir / f"cpu{cpu}/cache"
        if not cache_dir.is_dir():
            return None
        for index in sorted(cache_dir.glob("index*")):
            if self._text(index / "level") == "3":
                shared = self._list(index / "shared_cpu_list")
                return min(shared) if shared else None
        return None

    def _hybrid_kinds(self) -> dict[int, str]:
        devices = self.root / "sys/devices"
        kinds: dict[int, str] = {}
        for pmu, kind in (("cpu_core", "performance"), ("cpu_atom", "efficiency")):
            for cpu in self._list(devices / pmu / "cpus") or ():
                kinds[cpu] = kind
        return kinds if len(set(kinds.values())) > 1 else {}

    # -- NUMA nodes ---------------------------------------------------------------------------

    def _nodes(self, online: tuple[int, ...]) -> tuple[NumaNode, ...]:
        online_set = set(online)
        nodes: list[NumaNode] = []
        if self.node_dir.is_dir():
            for entry in self.node_dir.iterdir():
                match = re.fullmatch(r"node(\d+)", entry.name)
                if not match:
                    continue
                cpus = tuple(c for c in self._list(entry / "cpulist") or () if c in online_set)
                nodes.append(NumaNode(int(match.group(1)), cpus, self._node_memory(entry)))
        if not nodes:
            self.notes.append("no NUMA information (sys/devices/system/node): treating the machine as one node 0")
            return (NumaNode(0, online, None),)
        nodes.sort(key=lambda node: node.id)
        orphans = online_set - {cpu for node in nodes for cpu in node.cpus}
        if orphans:
            self.notes.append(f"CPUs {format_cpu_list(orphans)} are in no NUMA node: counted in node {nodes[0].id}")
            first = nodes[0]
            nodes[0] = NumaNode(first.id, tuple(sorted(first.cpus + tuple(orphans))), first.memory_kb)
        return tuple(nodes)

    def _node_memory(self, node_path: Path) -> int | None:
        text = self._text(node_path / "meminfo")
        if text is None:
            return None
        match = re.search(r"MemTotal:\s+(\d+)\s*kB", text)
        return int(match.group(1)) if match else None

    # -- what this process may use -------------------------------------------------------------

    def _status_field(self, name: str) -> tuple[int, ...] | None:
        text = self._text(self.root / "proc/self/status")
        if text is None:
            return None
        match = re.search(rf"^{name}:\s*(\S*)\s*$", text, re.MULTILINE)
        return self._parse(match.group(1), f"proc/self/status {name}") if match else None

    def _cgroup_dirs(self) -> list[Path]:
        """The process's own cgroup directories, innermost first, then the hierarchy root."""
        base = self.root / "sys/fs/cgroup"
        dirs: list[Path] = []
        text = self._text(self.root / "proc/self/cgroup") or ""
        for line in text.splitlines():
            hierarchy, _, rest = line.partition(":")
            controllers, _, path = rest.partition(":")
            if hierarchy == "0" and path.strip("/"):
                current = base / path.strip("/")
                while current != base and base in current.parents:
                    dirs.append(current)
                    current = current.parent
        dirs.append(base)
        return dirs

    def _cgroup_cpuset(self, leaf: str) -> tuple[tuple[int, ...], str] | None:
        for directory in self._cgroup_dirs():
            for candidate in (directory / f"cpuset.{leaf}.effective", directory / f"cpuset/cpuset.{leaf}"):
                values = self._list(candidate)
                if values:
                    return values, str(candidate.relative_to(self.root))
        return None

    def _allowed_cpus(self, online: tuple[int, ...]) -> tuple[tuple[int, ...], str]:
        online_set = set(online)
        if self.live:
            mask = os.sched_getaffinity(0)
            allowed = tuple(sorted(mask & online_set))
            return allowed, "sched_getaffinity"
        sources = []
        allowed_set = set(online)
        status = self._status_field("Cpus_allowed_list")
        if status is not None:
            allowed_set &= set(status)
            sources.append("proc/self/status")
        cpuset = self._cgroup_cpuset("cpus")
        if cpuset is not None:
            allowed_set &= set(cpuset[0])
            sources.append(cpuset[1])
        if not sources:
            return online, "all online CPUs (no affinity information under the root)"
        if not allowed_set:
            self.notes.append("the recorded affinity and cpuset do not intersect the online CPUs: using all online CPUs")
            return online, "all online CPUs (recorded masks empty)"
        return tuple(sorted(allowed_set)), " ∩ ".join(sources)

    def _allowed_mems(self, nodes: tuple[NumaNode, ...]) -> tuple[int, ...]:
        node_ids = {node.id for node in nodes if node.has_memory}
        allowed = set(node_ids)
        status = self._status_field("Mems_allowed_list")
        if status is not None:
            allowed &= set(status)
        cpuset = self._cgroup_cpuset("mems")
        if cpuset is not None:
            allowed &= set(cpuset[0])
        return tuple(sorted(allowed or node_ids))

    def _cpu_quota(self) -> tuple[float | None, str | None]:
        """Tightest CPU quota on the way from this process's cgroup to the root."""
        best: tuple[float | None, str | None] = (None, None)
        for directory in self._cgroup_dirs():
            quota = self._quota_v2(directory / "cpu.max")
            if quota is None:
                quota = self._quota_v1(directory / "cpu")
            if quota is not None and (best[0] is None or quota[0] < best[0]):
                best = quota
        return best

    def _quota_v2(self, path: Path) -> tuple[float, str] | None:
        text = self._text(path)
        if not text:
            return None
        parts = text.split()
        if parts[0] == "max":
            return None
        try:
            period = int(parts[1]) if len(parts) > 1 else 100_000
            return int(parts[0]) / period, str(path.relative_to(self.root))
        except ValueError:
            self.notes.append(f"ignored unreadable {path}: {text!r}")
            return None

    def _quota_v1(self, directory: Path) -> tuple[float, str] | None:
        quota = self._int(directory / "cpu.cfs_quota_us")
        period = self._int(directory / "cpu.cfs_period_us")
        if quota is None or quota <= 0 or not period:
            return None
        return quota / period, str((directory / "cpu.cfs_quota_us").relative_to(self.root))
