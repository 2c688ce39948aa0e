"""`launchkit run` on torchrun's engine, with real processes: torchrun's agent, a c10d rendezvous on
127.0.0.1, gloo collectives. Two "nodes" are two launchers on one machine, each on its own cores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.serve.conftest import free_port, wait_for

RANK = str(Path(__file__).parent.parent / "fixtures" / "rank.py")
CPUS = sorted(os.sched_getaffinity(0))
pytestmark = pytest.mark.skipif(len(CPUS) < 2, reason="two ranks need two CPUs")


def launchkit(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launchkit", "run", *args], capture_output=True, text=True,
                          timeout=timeout)


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "launchkit", "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def ranks_left() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if RANK in (p.info["cmdline"] or [])
            or "launchkit.launch.rank" in (p.info["cmdline"] or [])]


def test_one_node_two_ranks_pinned_apart_with_their_thread_counts():
    result = launchkit("--nproc-per-node", "2", RANK)
    assert result.returncode == 0, result.stderr
    ranks = sorted(lines(result.stdout), key=lambda r: r["rank"])
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world"] == 2 and r["sum"] == 3.0 for r in ranks)
    assert not set(ranks[0]["cpus"]) & set(ranks[1]["cpus"])  # disjoint, as planned
    for rank in ranks:
        assert rank["omp"] == str(len(rank["cpus"])) and rank["threads"] == len(rank["cpus"])
    assert "Setting OMP_NUM_THREADS" not in result.stderr  # torchrun's default did not override the plan


def test_two_nodes_meet_through_c10d_and_reduce_correctly(tmp_path):
    endpoint = f"127.0.0.1:{free_port()}"
    common = ("--nnodes", "2", "--nproc-per-node", "1", "--rdzv-endpoint", endpoint, "--rdzv-id", "t2")
    nodes = [start(*common, "--core-list", str(CPUS[0]), "--log-path", str(tmp_path / "a"), RANK),
             start(*common, "--core-list", str(CPUS[1]), RANK)]
    outputs = [node.communicate(timeout=120) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [err[-2000:] for _, err in outputs]
    ranks = lines(outputs[1][0]) + lines((tmp_path / "a").glob("run.rank*.out.log").__next__().read_text())
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    assert all(r["world"] == 2 and r["sum"] == 3.0 for r in ranks)  # 1 + 2, across the two "nodes"
    assert sorted(cpu for r in ranks for cpu in r["cpus"]) == CPUS[:2]  # each node on its own --core-list


def test_a_failing_rank_fails_the_launcher_and_leaves_nothing():
    result = launchkit("--nproc-per-node", "2", RANK, "fail-rank", "1")
    assert result.returncode != 0
    assert "ChildFailedError" in result.stderr or "exitcode" in result.stderr
    wait_for(lambda: not ranks_left(), timeout=5, what="every rank gone")


def test_sigterm_to_one_launcher_ends_the_job_on_both_sides():
    endpoint = f"127.0.0.1:{free_port()}"
    common = ("--nnodes", "2", "--nproc-per-node", "1", "--rdzv-endpoint", endpoint, "--rdzv-id", "t4",
              "--grace-period", "2")
    nodes = [start(*common, "--core-list", str(CPUS[0]), RANK, "forever"),
             start(*common, "--core-list", str(CPUS[1]), RANK, "forever")]
    try:
        assert nodes[0].stdout.readline().startswith("{")  # the collective ran: both sides are up
        nodes[0].send_signal(signal.SIGTERM)
        codes = [node.wait(timeout=90) for node in nodes]
        assert codes[0] == 128 + signal.SIGTERM and codes[1] != 0
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait()
    wait_for(lambda: not ranks_left(), timeout=5, what="every rank gone")


def test_dry_run_json_shows_each_local_rank_and_the_agent():
    result = launchkit("--nnodes", "2", "--nproc-per-node", "2", "--rdzv-endpoint", "node0:29400", "--dry-run",
                       "--json", RANK)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["mode"] == "torchrun" and [r["local_rank"] for r in plan["local_ranks"]] == [0, 1]
    assert plan["agent_argv"][1:3] == ["-m", "torch.distributed.run"]


@pytest.mark.parametrize("args, message", [
    (("--nnodes", "2", "--nproc-per-node", "2", RANK), "needs --rdzv-endpoint"),
    (("--nproc-per-node", "2", "--ninstances", "3", RANK), "give --nproc-per-node, not --ninstances"),
    (("--nproc-per-node", "2", "missing.py"), "not found"),
    (("--nproc-per-node", "64", RANK), "64"),
])
def test_bad_distributed_usage_exits_2_with_the_reason(args, message):
    result = launchkit(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
