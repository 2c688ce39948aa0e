from __future__ import annotations

import os
import shutil

import pytest

from launchkit.core.errors import TopologyError
from launchkit.core.topology import read_topology
from tests.conftest import machine_root


def test_split_smt_numbering_groups_siblings_by_thread_siblings(machine):
    topo = machine("xeon-2s-28c-split")
    assert topo.sockets == (0, 1)
    assert len(topo.cores) == 56 and topo.threads_per_core == 2
    first = topo.cores[0]
    assert first.cpus == (0, 56) and first.socket == 0 and first.node == 0
    # core_ids have holes (0,1,2,4,...): cores must still be CPU-id based, never core_id based
    assert [core.first for core in topo.cores[:4]] == [0, 1, 2, 3]
    assert topo.cores[28].cpus == (28, 84) and topo.cores[28].socket == 1
    assert [node.id for node in topo.nodes] == [0, 1]
    assert topo.l3_domains[0] == tuple(range(28)) + tuple(range(56, 84))


def test_sibling_adjacent_numbering(machine):
    topo = machine("desktop-4c-adjacent")
    assert [core.cpus for core in topo.cores] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert topo.threads_per_core == 2 and len(topo.allowed_cores) == 4


def test_two_sockets_four_nodes_each_with_ccx_l3(machine):
    topo = machine("epyc-2s-8nodes")
    assert len(topo.nodes) == 8 and topo.sockets == (0, 1)
    assert topo.node(5).cpus == tuple(range(40, 48)) + tuple(range(104, 112))
    assert len(topo.l3_domains) == 16
    assert {core.node for core in topo.cores if core.socket == 1} == {4, 5, 6, 7}


def test_more_than_ten_nodes_unequal_and_cpu_less(machine):
    topo = machine("nodes-17")
    assert [node.id for node in topo.nodes] == list(range(17))
    assert topo.node(12).cpus == (48, 49, 50, 51)  # not folded into node 1 (run_cpu's regex bug)
    assert len(topo.node(15).cpus) == 2
    assert topo.node(16).cpus == () and topo.node(16).has_memory
    assert 16 in topo.allowed_mems


def test_offline_cpus_are_left_out(machine):
    topo = machine("offline-8c")
    assert 3 not in topo.online_cpus and 13 not in topo.online_cpus
    cores = {core.first: core.cpus for core in topo.cores}
    assert cores[11] == (11,)  # core 3 lost its first thread
    assert cores[5] == (5,)  # core 5 lost its sibling
    assert len(topo.cores) == 8 and len(topo.online_cpus) == 14


def test_hybrid_core_types(machine):
    topo = machine("hybrid-8p8e")
    assert topo.is_hybrid
    assert topo.core_types == {"efficiency": list(range(16, 24)), "performance": list(range(16))}
    assert len(topo.cores) == 16
    assert {core.kind for core in topo.cores if core.first >= 16} == {"efficiency"}


def test_affinity_and_cgroup_v2_cpuset_intersect_and_quota_is_tightest(machine):
    topo = machine("restricted-v2")
    assert topo.allowed_cpus == (6, 7, 8, 9, 10, 11)
    assert "cpuset.cpus.effective" in topo.allowed_source
    assert topo.cpu_quota == 4.0 and topo.quota_source.endswith("pod1/cpu.max")
    assert [core.first for core in topo.allowed_cores] == [6, 7, 8, 9, 10, 11]
    assert len(topo.cores) == 16  # the machine itself is still fully described


def test_cgroup_v1_cpuset_and_cfs_quota(machine):
    topo = machine("restricted-v1")
    assert topo.allowed_cpus == tuple(range(8))
    assert topo.cpu_quota == 2.5


def test_vm_with_missing_files_still_reads(machine):
    topo = machine("vm-minimal")
    assert len(topo.cores) == 4 and [node.id for node in topo.nodes] == [0]
    assert topo.node(0).cpus == (0, 1, 2, 3)
    assert any("NUMA" in note for note in topo.notes)


def test_root_without_affinity_falls_back_to_online(tmp_path):
    root = tmp_path / "machine"
    shutil.copytree(machine_root("desktop-4c-adjacent"), root)
    (root / "proc/self/status").unlink()
    topo = read_topology(root)
    assert topo.allowed_cpus == tuple(range(8)) and "all online" in topo.allowed_source


def test_root_from_environment_variable(monkeypatch):
    monkeypatch.setenv("LAUNCHKIT_TOPOLOGY_ROOT", str(machine_root("hybrid-8p8e")))
    assert read_topology().is_hybrid


def test_not_a_system_root_is_a_clear_error(tmp_path):
    with pytest.raises(TopologyError, match="does not look like a system root"):
        read_topology(tmp_path)


def test_live_machine_uses_sched_getaffinity():
    topo = read_topology("/")
    assert set(topo.allowed_cpus) == os.sched_getaffinity(0) & set(topo.online_cpus)
    assert topo.allowed_source == "sched_getaffinity"


def test_garbled_status_file_is_a_note_not_a_crash(tmp_path):
    root = tmp_path / "machine"
    shutil.copytree(machine_root("desktop-4c-adjacent"), root)
    (root / "proc/self/status").write_text("Cpus_allowed_list:\tzero-three\nMems_allowed_list:\t0\n")
    topo = read_topology(root)
    assert topo.allowed_cpus == tuple(range(8))
    assert any("Cpus_allowed_list" in note for note in topo.notes)
