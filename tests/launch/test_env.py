from __future__ import annotations

import pytest

from launchkit.core.errors import UsageError
from launchkit.launch.env import JEMALLOC_CONF, RuntimeChoice, WaitPolicy, choose_runtime, instance_env
from launchkit.launch.libraries import FoundLibrary
from launchkit.launch.plan import InstancePlan

TC = FoundLibrary("tcmalloc", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "multiarch")
JE = FoundLibrary("jemalloc", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "multiarch")
IOMP = FoundLibrary("iomp5", "/venv/lib/libiomp5.so", "prefix")
ALL = {"tcmalloc": TC, "jemalloc": JE, "iomp5": IOMP}
NONE = {"tcmalloc": None, "jemalloc": None, "iomp5": None}
INSTANCE = InstancePlan(1, ((4,), (5,), (6,)), (0,), (0,), 3)


def env_for(runtime, base=None, exists=lambda path: True):
    return instance_env(INSTANCE, 4, runtime, base or {}, exists=exists, realpath=lambda p: p)


def test_auto_prefers_tcmalloc_then_jemalloc_and_intel_openmp():
    runtime = choose_runtime("auto", "auto", ALL, machine="x86_64")
    assert (runtime.allocator, runtime.omp_runtime) == ("tcmalloc", "intel")
    runtime = choose_runtime("auto", "auto", {**ALL, "tcmalloc": None}, machine="x86_64")
    assert runtime.allocator == "jemalloc"
    runtime = choose_runtime("auto", "auto", NONE, machine="x86_64")
    assert (runtime.allocator, runtime.omp_runtime) == ("default", "gnu") and runtime.notes


def test_non_x86_does_not_default_to_iomp5():
    assert choose_runtime("auto", "auto", ALL, machine="aarch64").omp_runtime == "gnu"


def test_explicit_missing_library_is_an_error_with_the_fix():
    with pytest.raises(UsageError, match="apt-get install libjemalloc2"):
        choose_runtime("jemalloc", "auto", NONE)
    with pytest.raises(UsageError, match="pip install intel-openmp"):
        choose_runtime("auto", "intel", NONE)


def test_intel_openmp_instance_env():
    env = env_for(choose_runtime("tcmalloc", "intel", ALL)).set
    assert env["OMP_NUM_THREADS"] == "3"
    assert env["KMP_AFFINITY"] == "granularity=fine,compact,1,0" and env["KMP_BLOCKTIME"] == "1"
    assert env["LD_PRELOAD"] == f"{IOMP.path}:{TC.path}"  # documented order: OpenMP, allocator
    assert (env["LAUNCHKIT_INSTANCE_ID"], env["LAUNCHKIT_NUM_INSTANCES"], env["LAUNCHKIT_CPUS"]) == ("1", "4", "4-6")
    assert "MALLOC_CONF" not in env


def test_gnu_openmp_places_are_the_instance_cpus():
    env = env_for(choose_runtime("default", "gnu", ALL)).set
    assert env["OMP_PROC_BIND"] == "close" and env["OMP_PLACES"] == "{4},{5},{6}"
    assert "KMP_AFFINITY" not in env and "LD_PRELOAD" not in env


def test_jemalloc_always_gets_malloc_conf_also_when_auto_chosen():
    runtime = choose_runtime("auto", "gnu", {**ALL, "tcmalloc": None})
    assert env_for(runtime).set["MALLOC_CONF"] == JEMALLOC_CONF


def test_user_values_win_with_a_note():
    result = env_for(choose_runtime("jemalloc", "intel", ALL), {"OMP_NUM_THREADS": "8", "MALLOC_CONF": "narenas:1"})
    assert "OMP_NUM_THREADS" not in result.set and "MALLOC_CONF" not in result.set
    assert any("OMP_NUM_THREADS=8 kept" in note for note in result.notes)


def test_torchrun_default_one_thread_is_replaced():
    result = env_for(choose_runtime("default", "gnu", ALL), {"OMP_NUM_THREADS": "1", "LOCAL_WORLD_SIZE": "2"})
    assert result.set["OMP_NUM_THREADS"] == "3"


def test_ld_preload_dedupes_keeps_user_entries_and_drops_missing():
    runtime = choose_runtime("jemalloc", "intel", ALL)
    base = {"LD_PRELOAD": f"/opt/libfoo.so /gone/libbar.so:{IOMP.path}"}
    result = env_for(runtime, base, exists=lambda path: not path.startswith("/gone"))
    # the user's own libiomp5 entry stays where they put it; ours is not added twice
    assert result.set["LD_PRELOAD"] == f"{JE.path}:/opt/libfoo.so:{IOMP.path}"
    assert any("/gone/libbar.so does not exist" in w for w in result.warnings)


def test_user_preloaded_versioned_allocator_is_not_duplicated():
    # run_cpu added a second jemalloc when the user preloaded libjemalloc.so.2
    runtime = choose_runtime("tcmalloc", "gnu", ALL)
    result = env_for(runtime, {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"})
    assert result.set.get("LD_PRELOAD") is None  # unchanged: the user's allocator stays, ours not added
    assert any("already has the allocator jemalloc" in note for note in result.notes)


def test_runtime_choice_reports_what_was_chosen_and_from_which_file():
    runtime = choose_runtime("auto", "auto", ALL, machine="x86_64")
    assert runtime.to_dict() == {"memory_allocator": "tcmalloc", "allocator_path": ALL["tcmalloc"].path,
                                 "omp_runtime": "intel", "iomp5_path": ALL["iomp5"].path}
    plain = choose_runtime("default", "gnu", ALL, machine="x86_64")
    assert plain.to_dict() == {"memory_allocator": "default", "allocator_path": None, "omp_runtime": "gnu",
                               "iomp5_path": None}


def test_the_wait_policy_reads_back_from_either_runtimes_variables():
    from launchkit.launch.env import wait_policy_in

    assert wait_policy_in({"OMP_WAIT_POLICY": "PASSIVE"}) == "passive"
    assert wait_policy_in({"KMP_BLOCKTIME": "0"}) == "passive"
    assert wait_policy_in({"KMP_BLOCKTIME": "1"}) == "spin" and wait_policy_in({}) == "spin"
    assert wait_policy_in({"GOMP_SPINCOUNT": "10000"}) == "brief"


@pytest.mark.parametrize("policy", list(WaitPolicy))
def test_each_wait_policy_reads_back_from_what_it_sets(policy):
    from launchkit.launch.env import wait_policy_in

    def variables(omp_runtime):
        runtime = choose_runtime("default", omp_runtime, ALL, machine="x86_64")
        return instance_env(INSTANCE, 4, runtime, {}, exists=lambda path: True, realpath=lambda p: p,
                            omp_wait=policy).set

    gnu = variables("gnu")
    assert wait_policy_in(gnu) == policy
    assert (policy == WaitPolicy.SPIN) == ("GOMP_SPINCOUNT" not in gnu and "OMP_WAIT_POLICY" not in gnu)
    # Intel's OpenMP waits in whole milliseconds: brief is its shortest spin, the same as spin
    assert wait_policy_in(variables("intel")) == (WaitPolicy.SPIN if policy == WaitPolicy.BRIEF else policy)
