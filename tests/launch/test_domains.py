"""L3 domains and sub-NUMA nodes in the CPU plan: invariants over every recorded machine (issue 24)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from launchkit.core.errors import PlanError
from launchkit.launch import domains
from launchkit.launch.cpu_options import CpuOptions
from launchkit.launch.plan import plan_cpus
from tests.conftest import MACHINES, machine_root
from tests.launch.test_plan import _check_invariants

ALL_MACHINES = sorted(path.name for path in MACHINES.iterdir())


def _pool(topo):
    """(node, L3) of each allowed physical core, in the planner's order."""
    from launchkit.launch.plan import _pool

    return _pool(topo, CpuOptions(), [])


def _crossing(topo, plan) -> list[int]:
    """Instances that take part of a domain (or of a NUMA node) together with another one."""
    pool = _pool(topo)
    by_cpu = {unit.cpus[0]: unit for unit in pool}
    slices = [[by_cpu[core[0]] for core in instance.cores] for instance in plan.instances]
    return domains.spanning(slices, pool)


def _even(sizes: list[int]) -> bool:
    return len(set(sizes)) == 1


def _evenly_divided(name: str) -> bool:
    """Machines whose pool has several domains of one size (hybrid parts plan their P-cores only)."""
    from launchkit.core.topology import read_topology

    topo = read_topology(machine_root(name))
    sizes = [len(group) for group in domains.group_by_domain(_pool(topo))]
    return not topo.is_hybrid and len(sizes) > 1 and _even(sizes)


EVEN_MACHINES = [name for name in ALL_MACHINES if _evenly_divided(name)]


def test_the_even_machines_are_the_ones_meant():
    assert {"epyc-2s-8nodes", "epyc-2s-ccd8-nps1", "epyc-2s-ccd8-nps4", "spr-2s-48c-snc2", "spr-2s-48c-snc4",
            "xeon-2s-28c-split"} <= set(EVEN_MACHINES)


@pytest.mark.parametrize("name", EVEN_MACHINES)
def test_instances_never_cross_a_domain_where_the_cores_divide_evenly(machine, name):
    topo = machine(name)
    groups = domains.group_by_domain(_pool(topo))
    count, size = len(groups), len(groups[0])
    checked = 0
    for n in range(1, count * size + 1):
        if (n % count == 0 and size % (n // count) == 0) or count % n == 0:
            plan = plan_cpus(topo, CpuOptions(ninstances=n))
            assert _crossing(topo, plan) == [], f"{name}: {n} instances on {count} domains of {size}"
            checked += 1
    for per in range(1, size + 1):
        if size % per == 0:
            plan = plan_cpus(topo, CpuOptions(ncores_per_instance=per))
            assert _crossing(topo, plan) == [], f"{name}: {per}-core instances on {size}-core domains"
            checked += 1
    assert checked >= 2


@pytest.mark.parametrize("name", ALL_MACHINES)
def test_whole_policy_never_crosses_a_domain_and_keeps_every_other_invariant(machine, name):
    topo = machine(name)
    units = len(topo.allowed_cores)
    for n in range(1, units + 1):
        options = CpuOptions(ninstances=n, cache_domains="whole")
        try:
            plan = plan_cpus(topo, options)
        except PlanError:
            assert topo.is_hybrid, f"{name}: N={n} failed"  # P-cores only: fewer units than cores
            continue
        assert len(plan.instances) == n
        _check_invariants(topo, options, plan)
        assert _crossing(topo, plan) == [], f"{name}: {n} instances"
    for per in range(1, units + 1):
        options = CpuOptions(ncores_per_instance=per, cache_domains="whole")
        try:
            plan = plan_cpus(topo, options)
        except PlanError as error:
            assert "does not fit" in str(error)
            continue
        assert all(len(instance.cpus) == per for instance in plan.instances)
        _check_invariants(topo, options, plan)
        assert _crossing(topo, plan) == [], f"{name}: {per}-core instances"


def test_six_core_instances_on_eight_core_domains_the_trade_off_is_named(machine):
    topo = machine("epyc-2s-ccd8-nps1")
    packed = plan_cpus(topo, CpuOptions(ncores_per_instance=6))
    assert [i.cpus for i in packed.instances][2] == tuple(range(12, 18))  # across CCDs 8-15 and 16-23
    assert len(packed.instances) == 10 and _crossing(topo, packed) == [1, 2, 5, 6, 9]
    note = next(note for note in packed.notes if "L3 domains" in note)
    assert "8 L3 domains of 8 cores" in note and "instance(s) 1-2,5-6,9" in note
    assert "--cache-domains whole keeps each within one: 8 instance(s), +12 idle CPUs" in note
    whole = plan_cpus(topo, CpuOptions(ncores_per_instance=6, cache_domains="whole"))
    assert [i.cpus[0] for i in whole.instances] == list(range(0, 64, 8))
    assert len(whole.idle_cpus) == 16 and any("no instance takes part" in note for note in whole.notes)


def test_sub_numa_nodes_are_domains_too(machine):
    # Sapphire Rapids in SNC-4: one L3 per socket, 4 nodes of 12 cores; 8 instances = 8 nodes
    topo = machine("spr-2s-48c-snc4")
    plan = plan_cpus(topo, CpuOptions(ninstances=8))
    assert [instance.nodes for instance in plan.instances] == [(node,) for node in range(8)]
    assert any("8 L3 domains of 12 cores" in note for note in plan.notes)
    # 5-core instances do not divide 12: packed ones cross nodes, whole ones stay on theirs
    packed = plan_cpus(topo, CpuOptions(ncores_per_instance=5))
    assert any(len(instance.nodes) > 1 for instance in packed.instances)
    whole = plan_cpus(topo, CpuOptions(ncores_per_instance=5, cache_domains="whole"))
    assert all(len(instance.nodes) == 1 for instance in whole.instances) and len(whole.instances) == 16


def test_fewer_instances_than_domains_take_whole_domains(machine):
    topo = machine("epyc-2s-ccd8-nps4")  # 8 nodes, one 8-core CCD each
    plan = plan_cpus(topo, CpuOptions(ninstances=3, cache_domains="whole"))
    assert [len(instance.cpus) for instance in plan.instances] == [24, 24, 16]
    with pytest.raises(PlanError, match="use a multiple of 8 instances"):
        plan_cpus(topo, CpuOptions(ninstances=3, cache_domains="whole", bind_numa_node=True))
    # the throughput profile with whole domains: one instance per domain
    per_domain = plan_cpus(machine("epyc-2s-ccd8-nps1"), CpuOptions(throughput_mode=True, cache_domains="whole"))
    assert len(per_domain.instances) == 8 and "one instance per L3 domain (8)" in per_domain.notes


def test_unknown_policy_is_refused(machine):
    with pytest.raises(PlanError, match="expected one of pack, whole"):
        plan_cpus(machine("epyc-2s-ccd8-nps1"), CpuOptions(ninstances=2, cache_domains="tight"))


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launchkit", "run", *args], capture_output=True, text=True, timeout=60)


def test_dry_run_explains_the_choice_and_the_flag_is_checked():
    root = str(machine_root("epyc-2s-ccd8-nps1"))
    result = _run("--topology-root", root, "--ncores-per-instance", "6", "--dry-run", "--json", "x.py")
    assert result.returncode == 0, result.stderr
    notes = json.loads(result.stdout)["notes"]
    assert any("take part of one and part of another" in note and "--cache-domains whole" in note for note in notes)
    whole = _run("--topology-root", root, "--ncores-per-instance", "6", "--cache-domains", "whole", "--dry-run",
                 "--json", "x.py")
    assert [instance["cpus"][0] for instance in json.loads(whole.stdout)["instances"]] == list(range(0, 64, 8))
    bad = _run("--topology-root", root, "--cache-domains", "tight", "--dry-run", "x.py")
    assert bad.returncode == 2 and "'tight' is not one of 'pack', 'whole'" in bad.stderr
