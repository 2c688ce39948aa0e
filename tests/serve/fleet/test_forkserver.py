"""Workers forked from the fork server: restarted and added workers skip `import torch`, and get the
cores, threads, memory policy and process group an exec'd worker gets. Timings: benchmarks/recovery.py."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from launchkit.serve.fleet.forkserver import fixed_environment, worker_arguments
from tests.serve.conftest import Server, free_port, wait_for

PYTHON = "/usr/bin/python3"
WORKER = [PYTHON, "-m", "launchkit.serve.worker", "--model-dir", "/m", "--worker-id", "w-1"]


def test_which_workers_can_be_forked():
    assert worker_arguments(WORKER) == (WORKER[3:], None)
    arguments, memory = worker_arguments(["/usr/bin/numactl", "--membind=0-1", "--", *WORKER])
    assert arguments == WORKER[3:] and memory["policy"] == "membind" and memory["nodes"] == [0, 1]
    assert worker_arguments(["/usr/bin/numactl", "--preferred=1", "--", *WORKER])[1]["nodes"] == [1]
    assert worker_arguments([PYTHON, "-m", "something.else"]) is None
    assert worker_arguments(["/usr/bin/numactl", "--physcpubind=0", "--", *WORKER]) is None  # not a memory policy
    assert worker_arguments(["taskset", "-c", "0", *WORKER]) is None


def test_per_worker_variables_do_not_split_fork_servers():
    one = {"LD_PRELOAD": "libtcmalloc.so", "OMP_NUM_THREADS": "2", "OMP_PLACES": "{0},{1}", "LAUNCHKIT_CPUS": "0-1"}
    two = {"LD_PRELOAD": "libtcmalloc.so", "OMP_NUM_THREADS": "1", "OMP_PLACES": "{2}", "LAUNCHKIT_CPUS": "2"}
    assert fixed_environment(one) == fixed_environment(two) == (("LD_PRELOAD", "libtcmalloc.so"),)
    assert fixed_environment({**one, "LD_PRELOAD": "libjemalloc.so"}) != fixed_environment(one)


def _worker(server: Server, model: str = "tiny", index: int = 0) -> dict:
    return server.manage("GET", f"/models/{model}")[1][0]["workers"][index]


def _replaced(server: Server, old_pid: int) -> dict:
    wait_for(lambda: _worker(server)["pid"] not in (None, old_pid) and _worker(server)["status"] == "READY",
             timeout=60, what="a replacement worker")
    return _worker(server)


def _fork_server_pid(server: Server) -> int:
    children = psutil.Process(server.proc.pid).children()
    return next(child.pid for child in children if "launchkit.serve.worker.zygote" in " ".join(child.cmdline()))


TINY_ROW = {"data": [0.5] * 64}


@pytest.mark.parametrize("grpc", [False, True], ids=["http", "with-grpc"])
def test_a_killed_worker_is_forked_again_pinned_as_before(example_archives, grpc):
    """With gRPC on too: importing gRPC sets its fork setting in the environment, and a frontend whose
    environment changed after its fork server started had every replacement exec'd."""
    extra = ["--grpc-address", f"127.0.0.1:{free_port()}"] if grpc else []
    with Server([str(example_archives["tiny"]), *extra], free_port()) as server:
        wait_for(lambda: "fork server" in server.output(), what="the fork server")
        first = _worker(server)
        assert psutil.Process(first["pid"]).ppid() == server.proc.pid  # the first worker is exec'd
        os.kill(first["pid"], signal.SIGKILL)
        second = _replaced(server, first["pid"])
        process = psutil.Process(second["pid"])
        assert process.ppid() == _fork_server_pid(server), "the replacement is forked"
        assert os.getpgid(second["pid"]) == second["pid"]  # its own group: the frontend signals groups
        assert process.name() == "lk-tiny-1.0-0"
        assert set(os.sched_getaffinity(second["pid"])) == {second["cores"][0]}  # its main thread: first core
        assert {cpu for thread in process.threads() for cpu in os.sched_getaffinity(thread.id)} == \
            set(second["cores"])  # every thread on the worker's cores, none beyond
        assert second["restarts"] == 1
        assert server.predict("tiny", TINY_ROW)[0] == 200
        assert "Traceback" not in server.output()
        assert server.stop() == 0
    assert not psutil.pid_exists(second["pid"]) or psutil.Process(second["pid"]).status() == psutil.STATUS_ZOMBIE


def test_without_the_fork_server_and_after_it_dies_workers_are_execd(example_archives, tmp_path):
    config = tmp_path / "config.properties"
    config.write_text("fork_workers=false\n")
    with Server([str(example_archives["tiny"]), "--ts-config", str(config)], free_port()) as server:
        first = _worker(server)
        os.kill(first["pid"], signal.SIGKILL)
        assert psutil.Process(_replaced(server, first["pid"])["pid"]).ppid() == server.proc.pid
        assert "fork server" not in server.output()
    with Server([str(example_archives["tiny"])], free_port()) as server:
        wait_for(lambda: "fork server" in server.output(), what="the fork server")
        os.kill(_fork_server_pid(server), signal.SIGKILL)
        wait_for(lambda: "fork server exited" in server.output(), what="the frontend noticing")
        first = _worker(server)
        os.kill(first["pid"], signal.SIGKILL)
        assert psutil.Process(_replaced(server, first["pid"])["pid"]).ppid() == server.proc.pid
        assert server.predict("tiny", TINY_ROW)[0] == 200
        assert server.stop() == 0


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="two workers need two cores")
def test_a_scale_up_is_forked(example_archives):
    with Server([str(example_archives["tiny"])], free_port()) as server:
        wait_for(lambda: "fork server" in server.output(), what="the fork server")
        status, body = server.manage("PUT", "/models/tiny?min_worker=2&synchronous=true")
        assert status == 200, body
        # the first worker gives up a core: a replacement on one core takes over from it once ready
        def settled() -> list[dict]:
            workers = server.manage("GET", "/models/tiny")[1][0]["workers"]
            return workers if len(workers) == 2 and all(len(w["cores"]) == 1 and w["status"] == "READY"
                                                        for w in workers) else []
        wait_for(settled, timeout=60, what="two one-core workers")
        workers = settled()
        assert {w["cores"][0] for w in workers} == {0, 1}
        forks = _fork_server_pid(server)
        assert all(psutil.Process(worker["pid"]).ppid() == forks for worker in workers), "added workers are forked"
        assert server.predict("tiny", TINY_ROW)[0] == 200
        assert server.stop() == 0


def test_the_fork_server_is_documented_in_the_config_keys():
    assert "fork_workers" in Path("docs/serving.md").read_text()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="two workers need two cores")
def test_a_stop_while_a_worker_is_starting_does_not_wait_for_it(example_archives):
    """A starting worker has no channel until it says hello, so it read no Stop: the server waited the whole
    graceful period (30 s) for it, then killed it."""
    with Server([str(example_archives["tiny"])], free_port()) as server:
        wait_for(lambda: "fork server" in server.output(), what="the fork server")
        status, body = server.manage("PUT", "/models/tiny?min_worker=2")  # asynchronous: returns while starting
        assert status in (200, 202), body
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 10, server.output()[-2000:]
