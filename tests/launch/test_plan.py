from __future__ import annotations

import itertools

import pytest

from launchkit.core.errors import PlanError
from launchkit.launch.cpu_options import CpuOptions
from launchkit.launch.plan import plan_cpus
from tests.conftest import MACHINES

ALL_MACHINES = sorted(path.name for path in MACHINES.iterdir())


def cpus_of(plan):
    return [instance.cpus for instance in plan.instances]


# --- invariants over every machine and many option combinations -------------------------------


def _check_invariants(topo, options, plan):
    core_of = {cpu: core.first for core in topo.cores for cpu in core.cpus}
    allowed = set(topo.allowed_cpus)
    seen_cores: set[int] = set()
    for instance in plan.instances:
        assert instance.cpus, "no empty instance"
        assert set(instance.cpus) <= allowed, "never widen the allowed set"
        cores = {core_of[cpu] for cpu in instance.cpus}
        assert not cores & seen_cores, "two instances share a physical core"
        seen_cores |= cores
        assert instance.threads == len(instance.cpus) or topo.cpu_quota is not None
        if options.use_logical_cores:
            for core in topo.allowed_cores:
                if core.first in cores:
                    assert set(core.cpus) <= set(instance.cpus), "siblings stay together"
        else:
            assert len(cores) == len(instance.cpus), "one thread per core without --use-logical-cores"
        if options.bind_numa_node:
            assert len(instance.nodes) == 1
        assert set(instance.mem_nodes) <= set(topo.allowed_mems)


@pytest.mark.parametrize("name", ALL_MACHINES)
def test_invariants_hold_for_every_instance_count(machine, name):
    topo = machine(name)
    for logical, bind, leftover in itertools.product([False, True], [False, True], ["spread", "idle"]):
        units = len(topo.allowed_cores)
        for count in range(1, units + 1):
            options = CpuOptions(ninstances=count, use_logical_cores=logical, bind_numa_node=bind, leftover=leftover)
            try:
                plan = plan_cpus(topo, options)
            except PlanError:
                assert bind or topo.is_hybrid, f"{name}: N={count} failed without node binding"
                continue
            assert len(plan.instances) == count
            _check_invariants(topo, options, plan)
            if leftover == "spread" and not bind:
                sizes = [len(i.cores) for i in plan.instances]
                assert max(sizes) - min(sizes) <= 1
        with pytest.raises(PlanError, match="Use --ninstances"):
            plan_cpus(topo, CpuOptions(ninstances=units + 1, use_logical_cores=logical))


@pytest.mark.parametrize("name", ALL_MACHINES)
def test_invariants_hold_for_every_core_count(machine, name):
    topo = machine(name)
    for bind in (False, True):
        for per in range(1, len(topo.allowed_cores) + 1):
            options = CpuOptions(ncores_per_instance=per, bind_numa_node=bind)
            try:
                plan = plan_cpus(topo, options)
            except PlanError as error:
                assert "does not fit" in str(error)
                continue
            assert all(len(i.cpus) == per for i in plan.instances)
            _check_invariants(topo, options, plan)


@pytest.mark.parametrize("name", ALL_MACHINES)
def test_cores_used_keeps_the_split_and_narrows_each_share_to_its_first_cores(machine, name):
    topo = machine(name)
    for logical, count, used in itertools.product([False, True], [1, 2, 3], [1, 2]):
        options = CpuOptions(ninstances=count, use_logical_cores=logical)
        try:
            whole = plan_cpus(topo, options)
        except PlanError:
            continue
        narrowed = plan_cpus(topo, CpuOptions(ninstances=count, use_logical_cores=logical, cores_used=used))
        _check_invariants(topo, options, narrowed)
        assert narrowed.ninstances == whole.ninstances
        for share, instance in zip(whole.instances, narrowed.instances):
            assert instance.index == share.index
            assert instance.cores == share.cores[:used]  # the share's first cores, siblings kept together
            assert instance.threads == len(instance.cpus) or topo.cpu_quota is not None
        if any(len(share.cores) > used for share in whole.instances):
            assert any("first" in note and "core(s) of its share" in note for note in narrowed.notes)


def test_cores_used_below_one_is_refused():
    with pytest.raises(PlanError, match="cores_used must be at least 1"):
        CpuOptions(cores_used=0)


# --- specific machines ---------------------------------------------------------------------------


def test_default_is_one_instance_over_all_physical_cores(machine):
    plan = plan_cpus(machine("xeon-2s-28c-split"), CpuOptions())
    assert cpus_of(plan) == [tuple(range(56))]
    assert plan.instances[0].threads == 56 and plan.instances[0].mem_nodes == (0, 1)


def test_split_numbering_two_instances_one_per_socket(machine):
    plan = plan_cpus(machine("xeon-2s-28c-split"), CpuOptions(ninstances=2))
    assert cpus_of(plan) == [tuple(range(28)), tuple(range(28, 56))]
    assert [i.nodes for i in plan.instances] == [(0,), (1,)]


def test_interleaved_numbering_keeps_each_instance_on_one_socket(machine):
    # even ids on socket 0, odd on socket 1: ordering by id alone would mix sockets in an instance
    topology = machine("xeon-2s-interleaved")
    two = plan_cpus(topology, CpuOptions(ninstances=2))
    assert [i.cpus for i in two.instances] == [(0, 2, 4, 6, 8, 10, 12, 14), (1, 3, 5, 7, 9, 11, 13, 15)]
    assert [i.mem_nodes for i in two.instances] == [(0,), (1,)]
    four = plan_cpus(topology, CpuOptions(ninstances=4))
    assert [i.cpus for i in four.instances] == [(0, 2, 4, 6), (8, 10, 12, 14), (1, 3, 5, 7), (9, 11, 13, 15)]


def test_logical_cores_keep_siblings_and_sockets(machine):
    # run_cpu gave -C 0-7 / 8-15 spanning both sockets with shared cores; we keep each socket whole
    plan = plan_cpus(machine("xeon-2s-28c-split"), CpuOptions(ninstances=2, use_logical_cores=True))
    assert cpus_of(plan)[0] == tuple(range(28)) + tuple(range(56, 84))
    assert plan.instances[0].threads == 56


def test_adjacent_numbering_uses_one_thread_per_core(machine):
    # run_cpu's bug: Core ids used as CPU ids -> -C 0-3 = two cores with both threads
    plan = plan_cpus(machine("desktop-4c-adjacent"), CpuOptions())
    assert cpus_of(plan) == [(0, 2, 4, 6)]
    plan = plan_cpus(machine("desktop-4c-adjacent"), CpuOptions(ninstances=2, use_logical_cores=True))
    assert cpus_of(plan) == [(0, 1, 2, 3), (4, 5, 6, 7)]


def test_node_id_confines_and_lists(machine):
    topo = machine("epyc-2s-8nodes")
    plan = plan_cpus(topo, CpuOptions(node_ids=(5,), ninstances=2))
    assert cpus_of(plan) == [(40, 41, 42, 43), (44, 45, 46, 47)]  # one CCX each
    plan = plan_cpus(topo, CpuOptions(node_ids=(0, 7)))
    assert plan.instances[0].nodes == (0, 7) and len(plan.instances[0].cpus) == 16


def test_node_id_errors_say_what_exists(machine):
    with pytest.raises(PlanError, match=r"NUMA node 9 does not exist; this machine has nodes 0-7"):
        plan_cpus(machine("epyc-2s-8nodes"), CpuOptions(node_ids=(9,)))
    with pytest.raises(PlanError, match="memory-only node"):
        plan_cpus(machine("nodes-17"), CpuOptions(node_ids=(16,)))
    with pytest.raises(PlanError, match="no CPU in common"):
        plan_cpus(machine("restricted-v2"), CpuOptions(node_ids=(1,), core_list=(6,)))


def test_node_with_no_allowed_cpu(tmp_path):
    import shutil

    from launchkit.core.topology import read_topology
    from tests.conftest import machine_root

    root = tmp_path / "m"
    shutil.copytree(machine_root("restricted-v2"), root)
    (root / "sys/fs/cgroup/kubepods/pod1/cpuset.cpus.effective").write_text("8-11\n")
    with pytest.raises(PlanError, match=r"node 0 \(CPUs 0-7\) has no CPU this process may use.*nodes 1"):
        plan_cpus(read_topology(root), CpuOptions(node_ids=(0,)))


def test_node_outside_allowed_set(machine):
    # restricted-v2 allows CPUs 6-11: node 0 = 0-7 (6,7 allowed), node 1 = 8-15 (8-11 allowed)
    topo = machine("restricted-v2")
    assert cpus_of(plan_cpus(topo, CpuOptions(node_ids=(1,)))) == [(8, 9, 10, 11)]


def test_more_than_ten_nodes_throughput_mode(machine):
    plan = plan_cpus(machine("nodes-17"), CpuOptions(throughput_mode=True))
    assert len(plan.instances) == 16  # node 16 has no CPUs
    assert all(len(i.nodes) == 1 for i in plan.instances)
    assert plan.instances[15].cpus == (60, 61)  # the unequal node keeps its own instance


def test_bind_numa_node_shares_instances_by_node_size(machine):
    plan = plan_cpus(machine("nodes-17"), CpuOptions(ninstances=31, bind_numa_node=True))
    assert len(plan.instances) == 31
    per_node: dict[int, int] = {}
    for instance in plan.instances:
        per_node[instance.nodes[0]] = per_node.get(instance.nodes[0], 0) + 1
    assert per_node[15] == 1 and sum(per_node.values()) == 31


def test_ncores_with_bind_leaves_per_node_remainder_idle(machine):
    plan = plan_cpus(machine("nodes-17"), CpuOptions(ncores_per_instance=3, bind_numa_node=True))
    assert len(plan.instances) == 15  # node 15 (2 cores) cannot hold 3
    assert 60 in plan.idle_cpus and 3 in plan.idle_cpus


def test_ninstances_and_ncores_round_robin_over_nodes(machine):
    plan = plan_cpus(machine("xeon-2s-28c-split"), CpuOptions(ninstances=2, ncores_per_instance=4, bind_numa_node=True))
    assert cpus_of(plan) == [(0, 1, 2, 3), (28, 29, 30, 31)]


def test_latency_mode(machine):
    plan = plan_cpus(machine("xeon-2s-28c-split"), CpuOptions(latency_mode=True))
    assert len(plan.instances) == 14 and all(len(i.cpus) == 4 and len(i.nodes) == 1 for i in plan.instances)


def test_latency_mode_on_small_machine_degrades_with_warning(machine):
    plan = plan_cpus(machine("restricted-v1"), CpuOptions(latency_mode=True, ninstances=3))
    assert len(plan.instances) == 2
    assert any("decides the instance count" in w for w in plan.warnings)
    plan = plan_cpus(machine("vm-minimal"), CpuOptions(latency_mode=True, node_ids=(0,), core_list=(0, 1, 2)))
    assert cpus_of(plan) == [(0, 1, 2)] and any("largest pool has 3" in w for w in plan.warnings)


def test_modes_contradict(machine):
    with pytest.raises(PlanError, match="pick one"):
        plan_cpus(machine("vm-minimal"), CpuOptions(latency_mode=True, throughput_mode=True))


def test_core_list_ranges_and_validation(machine):
    topo = machine("xeon-2s-28c-split")
    plan = plan_cpus(topo, CpuOptions(core_list=(0, 1, 2, 3, 56, 57), ncores_per_instance=2))
    # sizes count physical cores; listed siblings travel with their core
    assert cpus_of(plan) == [(0, 1, 56, 57), (2, 3)]
    with pytest.raises(PlanError, match=r"CPUs 200 \(200 not online\) that this process may not use"):
        plan_cpus(topo, CpuOptions(core_list=(0, 200)))
    with pytest.raises(PlanError, match="allowed CPUs are CPUs 6-11"):
        plan_cpus(machine("restricted-v2"), CpuOptions(core_list=(0, 1)))


def test_core_list_ninstances_not_silently_overridden(machine):
    plan = plan_cpus(machine("vm-minimal"), CpuOptions(core_list=(0, 1, 2, 3), ninstances=1, ncores_per_instance=2))
    assert len(plan.instances) == 1 and plan.idle_cpus == (2, 3)


def test_too_big_instances_say_what_fits(machine):
    with pytest.raises(PlanError, match="Use --ncores-per-instance 4 or fewer"):
        plan_cpus(machine("vm-minimal"), CpuOptions(ncores_per_instance=5))
    with pytest.raises(PlanError, match="room for 2 instance"):
        plan_cpus(machine("vm-minimal"), CpuOptions(ncores_per_instance=2, ninstances=3))


def test_leftover_policies(machine):
    topo = machine("vm-minimal")
    spread = plan_cpus(topo, CpuOptions(ninstances=3))
    assert cpus_of(spread) == [(0, 1), (2,), (3,)] and spread.idle_cpus == ()
    idle = plan_cpus(topo, CpuOptions(ninstances=3, leftover="idle"))
    assert cpus_of(idle) == [(0,), (1,), (2,)] and idle.idle_cpus == (3,)
    assert any("left idle" in note for note in idle.notes)


def test_rank_selects_instances_and_is_range_checked(machine):
    topo = machine("vm-minimal")
    plan = plan_cpus(topo, CpuOptions(ninstances=4, instance_indices=(1, 3)))
    assert plan.ninstances == 4 and [i.index for i in plan.instances] == [1, 3]
    assert cpus_of(plan) == [(1,), (3,)]
    with pytest.raises(PlanError, match=r"out of range: the plan has 4 instance\(s\), numbered 0-3"):
        plan_cpus(topo, CpuOptions(ninstances=4, instance_indices=(4,)))


def test_hybrid_uses_p_cores_by_default(machine):
    topo = machine("hybrid-8p8e")
    plan = plan_cpus(topo, CpuOptions())
    assert cpus_of(plan) == [(0, 2, 4, 6, 8, 10, 12, 14)]
    assert any("E-core" in note for note in plan.notes)
    assert len(plan_cpus(topo, CpuOptions(core_types="all")).instances[0].cpus) == 16
    assert cpus_of(plan_cpus(topo, CpuOptions(core_types="efficiency"))) == [tuple(range(16, 24))]


def test_offline_cpus_never_planned(machine):
    plan = plan_cpus(machine("offline-8c"), CpuOptions(use_logical_cores=True, ninstances=2))
    planned = {cpu for i in plan.instances for cpu in i.cpus}
    assert 3 not in planned and 13 not in planned and len(planned) == 14


def test_quota_scales_threads(machine):
    plan = plan_cpus(machine("restricted-v2"), CpuOptions(ninstances=2))
    assert [i.threads for i in plan.instances] == [2, 2]  # 6 CPUs, quota 4
    assert [len(i.cpus) for i in plan.instances] == [3, 3]
    assert any("quota" in w for w in plan.warnings)


def test_torchrun_local_rank_slices_again(machine):
    topo = machine("xeon-2s-28c-split")
    env = {"LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    plan = plan_cpus(topo, CpuOptions(ninstances=2), env)
    assert cpus_of(plan) == [(7, 8, 9, 10, 11, 12, 13), (35, 36, 37, 38, 39, 40, 41)]
    assert [i.threads for i in plan.instances] == [7, 7]
    with pytest.raises(PlanError, match="LOCAL_WORLD_SIZE=4"):
        plan_cpus(machine("vm-minimal"), CpuOptions(ninstances=2), env)


def test_a_library_callers_words_become_the_options_enums_or_a_named_error():
    from launchkit.core.errors import UsageError
    from launchkit.launch.domains import CacheDomains
    from launchkit.launch.cpu_options import CoreTypes, Leftover
    from launchkit.launch.supervise import OnFailure, SupervisorOptions

    options = CpuOptions(core_types="efficiency", leftover="idle", cache_domains="whole")
    assert (options.core_types, options.leftover, options.cache_domains) == (
        CoreTypes.EFFICIENCY, Leftover.IDLE, CacheDomains.WHOLE)
    assert options.core_types is CoreTypes.EFFICIENCY and CpuOptions().leftover is Leftover.SPREAD
    with pytest.raises(PlanError, match="--leftover 'some': expected one of spread, idle"):
        CpuOptions(leftover="some")
    with pytest.raises(PlanError, match="--core-types 'big': expected one of auto, performance, efficiency, all"):
        CpuOptions(core_types="big")
    assert SupervisorOptions(on_failure="wait").on_failure is OnFailure.WAIT
    with pytest.raises(UsageError, match="--on-failure 'sometimes': expected one of kill-all, wait"):
        SupervisorOptions(on_failure="sometimes")
