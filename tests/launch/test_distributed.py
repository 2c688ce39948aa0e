"""The torchrun plan: local ranks as instances, torchrun's own flags, oneCCL cores. Pure."""

from __future__ import annotations

import pytest

from launchkit.core.errors import UsageError
from launchkit.launch.distributed import RendezvousOptions, agent_argv, plan_distributed
from launchkit.launch.libraries import NumactlStatus
from launchkit.launch.cpu_options import CpuOptions
from launchkit.launch.runplan import ProgramSpec, build_run_plan


def run_plan(machine, name: str, ranks: int):
    return build_run_plan(machine(name), CpuOptions(ninstances=ranks), ProgramSpec("train.py", ("--epochs", "1")),
                          libraries={}, numactl=NumactlStatus("numactl", True, "test"), environ={})


def test_each_local_rank_gets_its_own_cores_memory_and_threads(machine):
    plan = plan_distributed(run_plan(machine, "xeon-2s-28c-split", 4), RendezvousOptions("2", 4, "node0:29400"),
                            ccl_available=False)
    cpus = [set(rank.cpus) for rank in plan.ranks]
    assert all(not a & b for i, a in enumerate(cpus) for b in cpus[i + 1:])  # disjoint
    assert [rank.env["OMP_NUM_THREADS"] for rank in plan.ranks] == ["14"] * 4
    assert [rank.mem_nodes for rank in plan.ranks] == [(0,), (0,), (1,), (1,)]  # node-aware, memory bound
    assert plan.ranks[0].argv[:2] == ["numactl", "--membind=0"] and plan.ranks[0].argv[-3:] == ["train.py",
                                                                                                 "--epochs", "1"]
    described = plan.to_dict()
    assert [rank["local_rank"] for rank in described["local_ranks"]] == [0, 1, 2, 3]


def test_the_agent_is_torchrun_with_torchrun_flags(machine):
    plan = plan_distributed(run_plan(machine, "xeon-2s-28c-split", 2),
                            RendezvousOptions("2:4", 2, "node0:29400", rdzv_id="job7", node_rank=1, max_restarts=3),
                            ccl_available=False)
    argv = agent_argv(plan, "/tmp/ranks.json", python="python3")
    assert argv[:3] == ["python3", "-m", "torch.distributed.run"]
    joined = " ".join(argv)
    for flag in ("--nnodes 2:4", "--nproc-per-node 2", "--rdzv-backend c10d", "--rdzv-endpoint node0:29400",
                 "--rdzv-id job7", "--node-rank 1", "--max-restarts 3"):
        assert flag in joined
    assert argv[-5:] == ["--no-python", "python3", "-m", "launchkit.launch.rank", "/tmp/ranks.json"]
    single = plan_distributed(run_plan(machine, "xeon-2s-28c-split", 2), RendezvousOptions("1", 2), ccl_available=False)
    assert "--standalone" in agent_argv(single, "f") and "--rdzv-endpoint" not in agent_argv(single, "f")


def test_oneccl_workers_get_reserved_cores_only_when_oneccl_is_there(machine):
    base = run_plan(machine, "xeon-2s-28c-split", 2)
    plan = plan_distributed(base, RendezvousOptions("1", 2, ccl_worker_count=2), ccl_available=True)
    first = plan.ranks[0]
    assert first.env["CCL_WORKER_COUNT"] == "2" and first.env["CCL_WORKER_AFFINITY"] == "26,27"
    assert first.env["OMP_NUM_THREADS"] == "26" and first.env["LAUNCHKIT_CPUS"] == "0-25"
    assert first.cpus == tuple(range(28))  # the process keeps its slice; oneCCL pins its workers
    without = plan_distributed(base, RendezvousOptions("1", 2, ccl_worker_count=2), ccl_available=False)
    assert "CCL_WORKER_COUNT" not in without.ranks[0].env
    assert any("oneccl_bindings_for_pytorch" in warning for warning in without.plan.warnings)
    with pytest.raises(UsageError, match="leaves local rank 0 no CPU"):
        plan_distributed(base, RendezvousOptions("1", 2, ccl_worker_count=28), ccl_available=True)


@pytest.mark.parametrize("options, message", [
    (RendezvousOptions("2", 2), "needs --rdzv-endpoint"),
    (RendezvousOptions("two", 2, "h:1"), "expected a node count"),
    (RendezvousOptions("4:2", 2, "h:1"), "maximum is below the minimum"),
    (RendezvousOptions("2", 2, "h:port"), "expected HOST:PORT"),
])
def test_bad_rendezvous_flags_say_what_to_give(options, message):
    with pytest.raises(UsageError, match=message):
        options.check()
