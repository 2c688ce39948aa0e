"""`launchkit run` end to end: real processes, real affinity, real numactl, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import machine_root

CHILD = str(Path(__file__).parent.parent / "fixtures" / "child.py")
ALLOWED = sorted(os.sched_getaffinity(0))


def launchkit(*args: str, env: dict[str, str] | None = None, timeout: float = 60, prefix: list[str] | None = None):
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "launchkit", *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


def reports(stdout: str) -> dict[int, dict]:
    """Child JSON lines by instance id (lines may carry the "[i] " prefix)."""
    found = {}
    for line in stdout.splitlines():
        text = line.split("] ", 1)[1] if line.startswith("[") else line
        if text.startswith("{"):
            data = json.loads(text)
            if "env" in data:
                found[int(data["env"]["LAUNCHKIT_INSTANCE_ID"])] = data
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _expand(cpu_list: str) -> list[int]:
    """The kernel's "0-3,8" notation, expanded here by hand (not with the code under test)."""
    cpus: list[int] = []
    for item in cpu_list.split(","):
        first, _, last = item.partition("-")
        cpus += list(range(int(first), int(last or first) + 1))
    return cpus


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# --- binding and environment ----------------------------------------------------------------


@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two CPUs")
def test_two_instances_get_disjoint_affinity_env_and_preloads():
    result = launchkit("run", "--ninstances", "2", CHILD, "hello world", "a;echo INJECTED")
    assert result.returncode == 0, result.stderr
    found = reports(result.stdout)
    assert set(found) == {0, 1}
    half = (len(ALLOWED) + 1) // 2  # leftover policy "spread": the first instance takes the odd core
    expected = [ALLOWED[:half], ALLOWED[half:]]
    assert [found[0]["affinity"], found[1]["affinity"]] == expected
    for index, report in found.items():
        env = report["env"]
        assert env["OMP_NUM_THREADS"] == str(len(expected[index]))
        assert env["LAUNCHKIT_NUM_INSTANCES"] == "2" and _expand(env["LAUNCHKIT_CPUS"]) == expected[index]
        assert env["KMP_AFFINITY"] == "granularity=fine,compact,1,0"
        assert any("tcmalloc" in lib for lib in report["libs"]), report["libs"]
        assert any("libiomp5" in lib for lib in report["libs"]), report["libs"]
        assert report["argv"] == ["hello world", "a;echo INJECTED"]  # no shell anywhere
    assert "INJECTED\n" not in result.stdout
    assert any(line.startswith("[0] {") for line in result.stdout.splitlines())
    assert any(line.startswith("[1] {") for line in result.stdout.splitlines())


def test_jemalloc_is_mapped_and_configured():
    result = launchkit("run", "--memory-allocator", "jemalloc", "--omp-runtime", "gnu", CHILD)
    assert result.returncode == 0, result.stderr
    report = reports(result.stdout)[0]
    assert any("jemalloc" in lib for lib in report["libs"])
    assert report["env"]["MALLOC_CONF"].startswith("oversize_threshold:1")
    assert report["env"]["OMP_PLACES"] == ",".join(f"{{{c}}}" for c in ALLOWED)
    assert "<jemalloc>" not in result.stderr  # every MALLOC_CONF key is understood


def test_caller_affinity_is_never_widened():
    cpu = str(ALLOWED[-1])
    result = launchkit("run", CHILD, prefix=["taskset", "-c", cpu])
    assert result.returncode == 0, result.stderr
    report = reports(result.stdout)[0]
    assert report["affinity"] == [int(cpu)] and report["env"]["OMP_NUM_THREADS"] == "1"


def test_memory_is_bound_with_numactl():
    result = launchkit("run", "--no-python", "numactl", "--show")
    assert result.returncode == 0, result.stderr
    assert "policy: bind" in result.stdout and "membind: 0" in result.stdout
    unbound = launchkit("run", "--disable-numactl", "--no-python", "numactl", "--show")
    assert "policy: default" in unbound.stdout


def test_module_and_no_python_programs():
    result = launchkit("run", "-m", "json.tool", "--help")
    assert result.returncode == 0 and "usage" in result.stdout.lower()
    result = launchkit("run", "--no-python", "--", "echo", "$HOME", "*")
    assert result.stdout.strip() == "$HOME *"


def test_torchrun_local_rank_threads():
    env = {**os.environ, "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": str(len(ALLOWED)), "OMP_NUM_THREADS": "1"}
    result = launchkit("run", CHILD, env=env)
    report = reports(result.stdout)[0]
    assert report["affinity"] == [ALLOWED[1 % len(ALLOWED)]] and report["env"]["OMP_NUM_THREADS"] == "1"


def test_user_environment_wins():
    env = {**os.environ, "KMP_BLOCKTIME": "200"}
    result = launchkit("run", CHILD, env=env)
    assert reports(result.stdout)[0]["env"]["KMP_BLOCKTIME"] == "200"


# --- exit codes and failure policy ----------------------------------------------------------


def test_single_instance_exit_code_is_propagated():
    assert launchkit("run", CHILD, "--exit", "7").returncode == 7


@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two CPUs")
def test_one_failure_kills_the_others_and_is_reported(tmp_path):
    script = tmp_path / "fail_one.py"
    script.write_text(
        "import os, sys, time\n"
        "if os.environ['LAUNCHKIT_INSTANCE_ID'] == '1': sys.exit(3)\n"
        "time.sleep(30)\n"
    )
    started = time.time()
    result = launchkit("run", "--ninstances", "2", str(script))
    assert result.returncode == 3
    assert time.time() - started < 15
    assert "instance 1" in result.stderr and "exit 3" in result.stderr
    assert "killed by SIGTERM" in result.stderr


@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two CPUs")
def test_on_failure_wait_lets_others_finish(tmp_path):
    script = tmp_path / "fail_one.py"
    script.write_text(
        "import os, sys, time\n"
        "if os.environ['LAUNCHKIT_INSTANCE_ID'] == '1': sys.exit(4)\n"
        "time.sleep(0.5); print('finished')\n"
    )
    result = launchkit("run", "--ninstances", "2", "--on-failure", "wait", str(script))
    assert result.returncode == 4 and "[0] finished" in result.stdout


# --- signals and orphans ---------------------------------------------------------------------


def _start(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "launchkit", "run", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs,
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_are_forwarded_to_every_instance(tmp_path, signum):
    count = str(min(2, len(ALLOWED)))
    launcher = _start(["--ninstances", count, CHILD, "--trap-term", "--sleep", "30", "--pid-dir", str(tmp_path)])
    try:
        assert wait_for(lambda: len(list(tmp_path.glob("*.pid"))) == int(count))  # handlers are in place
        launcher.send_signal(signum)
        stdout, stderr = launcher.communicate(timeout=20)
    finally:
        launcher.kill()
    assert launcher.returncode == 128 + signum, stderr
    got = [json.loads(line.split("] ", 1)[-1]) for line in stdout.splitlines() if '"got"' in line]
    assert len(got) == int(count)
    for pidfile in tmp_path.glob("*.pid"):
        assert not pid_alive(int(pidfile.stem))


def test_sigkill_after_grace_period_for_stubborn_instances(tmp_path):
    launcher = _start(["--grace-period", "0.5", CHILD, "--ignore-term", "--sleep", "60", "--pid-dir", str(tmp_path)])
    try:
        assert wait_for(lambda: list(tmp_path.glob("*.pid")))  # it ignores SIGTERM from now on
        started = time.time()
        launcher.send_signal(signal.SIGTERM)
        launcher.communicate(timeout=20)
    finally:
        launcher.kill()
    assert time.time() - started < 10
    assert launcher.returncode == 128 + signal.SIGTERM
    assert not any(pid_alive(int(p.stem)) for p in tmp_path.glob("*.pid"))


def test_no_orphans_when_the_launcher_is_sigkilled(tmp_path):
    count = str(min(2, len(ALLOWED)))
    launcher = _start(["--ninstances", count, CHILD, "--sleep", "60", "--pid-dir", str(tmp_path)])
    pids: list[int] = []
    try:
        assert wait_for(lambda: len(list(tmp_path.glob("*.pid"))) == int(count))
        pids = [int(p.stem) for p in tmp_path.glob("*.pid")]
        assert all(pid_alive(pid) for pid in pids)  # alive until the launcher dies: its death is what ends them
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.communicate(timeout=10)
        assert wait_for(lambda: not any(pid_alive(pid) for pid in pids), timeout=10)
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# --- logs ------------------------------------------------------------------------------------


def test_log_path_writes_stable_names_and_summary(tmp_path):
    logs = tmp_path / "logs"
    result = launchkit("run", "--log-path", str(logs), "--log-file-prefix", "job", CHILD, "--exit", "5")
    assert result.returncode == 5
    assert (logs / "job.0.out.log").read_text().startswith("{")
    assert (logs / "job.0.err.log").exists()
    summary = json.loads((logs / "job.summary.json").read_text())
    assert summary["result"]["exit_code"] == 5
    assert summary["result"]["instances"][0]["returncode"] == 5
    assert summary["result"]["instances"][0]["pid"] > 0
    assert summary["plan"]["instances"][0]["argv"][-2:] == ["--exit", "5"]


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "no PROGRAM given"),
        (["does_not_exist.py"], "not found"),
        (["--no-python", "no-such-binary-xyz"], "not found on PATH"),
        (["--ninstances", "99", CHILD], "Use --ninstances"),
        (["--ncores-per-instance", "99", CHILD], "does not fit"),
        (["--core-list", "0-2x", CHILD], "not a number"),
        (["--core-list", "999", CHILD], "may not use"),
        (["--node-id", "7", CHILD], "does not exist"),
        (["--ninstances", "2", "--rank", "5", CHILD], "out of range"),
        (["--json", CHILD], "use it with --dry-run"),
        (["--profile", "nope", CHILD], "profile 'nope' not found"),
        (["--enable-tcmalloc", "--enable-jemalloc", CHILD], "pick one"),
        (["--latency-mode", "--throughput-mode", CHILD], "pick one"),
    ],
)
def test_bad_input_exits_2_with_a_message(args, message):
    result = launchkit("run", *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr


# --- dry run ---------------------------------------------------------------------------------


def test_dry_run_json_for_a_recorded_machine():
    root = machine_root("xeon-2s-28c-split")
    result = launchkit("run", "--topology-root", str(root), "--ninstances", "4", "--dry-run", "--json", CHILD, "x")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert [i["index"] for i in plan["instances"]] == [0, 1, 2, 3]
    first = plan["instances"][0]
    assert first["cpus"] == list(range(14)) and first["mem_nodes"] == [0]
    assert first["env"]["OMP_NUM_THREADS"] == "14"
    assert first["argv"][:2] == ["numactl", "--membind=0"] and first["argv"][-2:] == [CHILD, "x"]
    assert plan["instances"][3]["mem_nodes"] == [1]
    assert [i["cpus"] for i in plan["instances"]] == [list(range(start, start + 14)) for start in (0, 14, 28, 42)]
    assert plan["warnings"] == [] and plan["idle_cpus"] == []  # 56 cores split 4 ways: nothing left, nothing odd


def test_dry_run_profiles_and_underscore_spellings():
    root = str(machine_root("epyc-2s-8nodes"))
    plan = json.loads(launchkit("run", "--topology-root", root, "--profile", "throughput", "--dry-run", "--json", CHILD).stdout)
    assert len(plan["instances"]) == 8
    plan = json.loads(launchkit("run", "--topology-root", root, "--profile", "latency", "--dry-run", "--json", CHILD).stdout)
    assert len(plan["instances"]) == 16 and all(len(i["cpus"]) == 4 for i in plan["instances"])
    # flags on the command line beat the profile; anchor spellings are accepted
    plan = json.loads(
        launchkit("run", "--topology-root", root, "--profile", "throughput", "--nodes_list", "2-3",
                  "--instance-idx", "1", "--dry-run", "--json", CHILD).stdout
    )
    assert [i["index"] for i in plan["instances"]] == [1] and plan["instances"][0]["nodes"] == [3]


def test_dry_run_human_output_lists_the_plan():
    result = launchkit("run", "--topology-root", str(machine_root("hybrid-8p8e")), "--dry-run", CHILD)
    assert result.returncode == 0
    assert "OMP_NUM_THREADS=8" in result.stdout and "E-core" in result.stdout


def test_info_json_keys():
    report = json.loads(launchkit("info", "--json").stdout)
    for key in ("sockets", "numa_nodes", "physical_cores", "logical_cpus", "threads_per_core", "allowed_cpus",
                "cpu_quota", "core_types", "isa", "libraries", "numactl"):
        assert key in report
    assert report["allowed_cpus"] == ALLOWED
    assert set(report["libraries"]) == {"tcmalloc", "jemalloc", "iomp5"}
    flags = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    assert report["isa"]["avx512"] == (" avx512f" in flags) and report["isa"]["source"] == "proc/cpuinfo"
    assert report["isa"]["amx"] == (" amx_tile" in flags and " amx_bf16" in flags)
    assert report["numactl"]["found"] is True


def test_info_for_recorded_machine_human_output():
    result = launchkit("info", "--topology-root", str(machine_root("restricted-v2")))
    assert result.returncode == 0
    assert "6-11" in result.stdout and "4 CPUs" in result.stdout


def test_omp_wait_flag():
    plan = json.loads(launchkit("run", "--omp-runtime", "gnu", "--omp-wait", "passive", "--dry-run", "--json",
                                CHILD).stdout)
    assert plan["instances"][0]["env"]["OMP_WAIT_POLICY"] == "PASSIVE"
    plan = json.loads(launchkit("run", "--omp-runtime", "intel", "--dry-run", "--json", CHILD).stdout)
    assert plan["instances"][0]["env"]["KMP_BLOCKTIME"] == "1"
    plan = json.loads(launchkit("run", "--omp-runtime", "gnu", "--omp-wait", "brief", "--dry-run", "--json",
                                CHILD).stdout)
    assert plan["instances"][0]["env"]["GOMP_SPINCOUNT"] == "10000"
    assert "OMP_WAIT_POLICY" not in plan["instances"][0]["env"]
    refused = launchkit("run", "--omp-wait", "sometimes", "--dry-run", CHILD)
    assert refused.returncode == 2 and "'sometimes' is not one of" in refused.stderr
