"""launchkit.runtime: the behaviours IPEX's own runtime tests assert (test_runtime_api.py and
test_runtime_api_jit.py), ported, plus the errors IPEX left silent, plus where every stream runs
(read from /proc/self/task/*/status). On 2 CPUs: splits over 3 cores are checked as arithmetic."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest
import torch

from launchkit.core.errors import UsageError
from launchkit.runtime import (
    CPUPool, MultiStreamModule, MultiStreamModuleHint, Task, get_core_list_of_node_id, get_default_num_streams, pin,
)
from launchkit.runtime import multistream, pool as pool_module

MACHINES = Path(__file__).parent.parent / "fixtures" / "machines"
CPUS = sorted(os.sched_getaffinity(0))


class SimpleNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(64, 128, (3, 3), stride=(2, 2), padding=(1, 1), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.conv(x), start_dim=1)


class Echo(torch.nn.Module):
    def forward(self, *args):  # noqa: ANN002, ANN201
        return args


class EchoOne(torch.nn.Module):
    def forward(self, value):  # noqa: ANN001, ANN201
        return value


def traced() -> torch.jit.ScriptModule:
    torch.manual_seed(0)
    return torch.jit.freeze(torch.jit.trace(SimpleNet().eval(), torch.rand(2, 64, 3, 3)))


def allowed(thread_id: int) -> str:
    status = Path(f"/proc/self/task/{thread_id}/status").read_text()
    return next(line.split(":", 1)[1].strip() for line in status.splitlines() if line.startswith("Cpus_allowed_list"))


def all_masks() -> dict[int, str]:
    return {int(task.name): allowed(int(task.name)) for task in Path("/proc/self/task").iterdir()}


# -- pools -----------------------------------------------------------------------------------------

def _first_threads(cpus: list[int]) -> list[int]:
    """The first allowed hardware thread of each physical core, read from sysfs here (not by launchkit)."""
    first: dict[str, int] = {}
    for cpu in cpus:
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        key = siblings.read_text().strip() if siblings.exists() else str(cpu)
        first.setdefault(key, cpu)
    return sorted(first.values())


def _node_cpus(node: int) -> list[int]:
    path = Path(f"/sys/devices/system/node/node{node}/cpulist")
    if not path.exists():
        return CPUS
    listed = set()
    for part in path.read_text().strip().split(","):
        low, _, high = part.partition("-")
        listed |= set(range(int(low), int(high or low) + 1))
    return sorted(listed & set(CPUS))


def test_pools_come_from_the_allowed_physical_cores():
    assert CPUPool([CPUS[0]]).core_ids == [CPUS[0]]
    physical = _first_threads(CPUS)  # with SMT, one CPU per physical core; without, every CPU
    assert CPUPool().core_ids == physical
    assert CPUPool(node_id=0).core_ids == get_core_list_of_node_id(0) == _first_threads(_node_cpus(0))
    assert get_default_num_streams(CPUPool()) == len(physical)


@pytest.mark.parametrize("make,error,message", [
    (lambda: CPUPool([]), ValueError, "empty"),
    (lambda: CPUPool([CPUS[0], CPUS[0]]), ValueError, "twice"),
    (lambda: CPUPool([4096]), ValueError, "outside what this process may use"),
    (lambda: CPUPool(["0"]), TypeError, "CPU numbers"),
    (lambda: CPUPool([0], node_id=0), ValueError, "not both"),
    (lambda: CPUPool(node_id=7), ValueError, "NUMA node 7 does not exist"),
])
def test_pools_ipex_would_have_made_silently_are_errors(make, error, message):
    # a Python caller catches what it expects (ValueError, TypeError); the CLI still sees a UsageError
    with pytest.raises(error, match=message) as raised:
        make()
    assert isinstance(raised.value, UsageError)


def test_nodes_are_numa_nodes_not_sockets(monkeypatch):
    monkeypatch.setenv("LAUNCHKIT_TOPOLOGY_ROOT", str(MACHINES / "epyc-2s-8nodes"))
    pool_module._topology.cache_clear()
    try:
        from launchkit.core.topology import read_topology

        topology = read_topology()
        node = topology.nodes[1]
        expected = sorted(core.cpus[0] for core in topology.allowed_cores if core.node == node.id)
        assert get_core_list_of_node_id(node.id) == expected
        socket_zero = {core.cpus[0] for core in topology.allowed_cores if core.socket == 0}
        assert set(expected) < socket_zero  # a node is a part of a socket here, not the whole of it
    finally:
        pool_module._topology.cache_clear()


def test_a_pool_splits_evenly_with_the_first_ones_one_larger():
    three = CPUPool.__new__(CPUPool)  # a 3-core pool as arithmetic (this machine has 2 CPUs)
    three.core_ids, three.node_id = [0, 1, 2], None
    assert [p.core_ids for p in three.split(2)] == [[0, 1], [2]]
    assert [p.core_ids for p in three.split(3)] == [[0], [1], [2]]
    assert multistream._sizes(4, 3) == [2, 1, 1] and multistream._sizes(2, 2) == [1, 1]


# -- pin -----------------------------------------------------------------------------------------

def test_pin_as_decorator_and_context_gives_the_same_results():
    model, x = SimpleNet().eval(), torch.rand(8, 64, 3, 3)
    expected = model(x)

    @pin(CPUPool([CPUS[-1]]))
    def run(model, x):  # noqa: ANN001, ANN202
        assert os.sched_getaffinity(0) == {CPUS[-1]} and torch.get_num_threads() == 1
        return model(x)

    assert torch.equal(run(model, x), expected)
    with pin(CPUPool([CPUS[0]])):
        assert torch.equal(model(x), expected)


def test_nested_pins_restore_cores_and_threads():
    before = (os.sched_getaffinity(0), torch.get_num_threads())
    softmax, x = torch.nn.Softmax(dim=-1), torch.rand(100, 8276)
    with pin(CPUPool(CPUS)):
        outer = (os.sched_getaffinity(0), torch.get_num_threads())
        with pin(CPUPool([CPUS[-1]])):
            assert (os.sched_getaffinity(0), torch.get_num_threads()) == ({CPUS[-1]}, 1)
            inner = softmax(x)
        assert (os.sched_getaffinity(0), torch.get_num_threads()) == outer
    assert (os.sched_getaffinity(0), torch.get_num_threads()) == before
    assert torch.equal(inner, softmax(x))


def test_pin_moves_the_threads_openmp_made_before():
    """A team made on one core, then pinned to both: its threads move too (IPEX needed kmp_* calls)."""
    report: dict = {}

    def body() -> None:
        os.sched_setaffinity(0, {CPUS[0]})
        torch.set_num_threads(len(CPUS))
        known = set(all_masks())
        torch.rand(256, 256) @ torch.rand(256, 256)  # the team is made now, on CPUS[0]
        team = set(all_masks()) - known
        report["before"] = {allowed(tid) for tid in team}
        with pin(CPUPool(CPUS)):
            report["pinned"] = {allowed(tid) for tid in team}
        report["team"] = team

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    both = f"{CPUS[0]}-{CPUS[-1]}" if len(CPUS) == 2 else ",".join(map(str, CPUS))
    assert report["team"] and report["before"] == {str(CPUS[0])}
    assert report["pinned"] == {both}


# -- Task -----------------------------------------------------------------------------------------

def test_tasks_run_modules_and_functions_on_their_pool():
    model, x = SimpleNet().eval(), torch.rand(8, 64, 3, 3)
    expected = model(x)
    task = Task(model, CPUPool(node_id=0))
    assert torch.equal(task(x).get(), expected)
    assert torch.equal(task.run_sync(x), expected)
    same = task  # IPEX's test_task_copy: the same task, submitted twice
    assert torch.equal(same(x).get(), expected)

    def run(model, x):  # noqa: ANN001, ANN202
        return model(x), os.sched_getaffinity(0)

    single = Task(run, CPUPool([CPUS[-1]]))
    result, cores = single(model, x).get()
    assert torch.equal(result, expected) and cores == {CPUS[-1]}
    assert allowed(single.native_id) == str(CPUS[-1])

    def fails() -> None:
        raise ValueError("inside the task")

    with pytest.raises(ValueError, match="inside the task"):
        Task(fails, CPUPool()).run_sync()
    with pytest.raises(TypeError, match="CPUPool"):
        Task(model, [0])


# -- MultiStreamModule --------------------------------------------------------------------------------

def test_streams_give_the_plain_models_results_and_split_the_batch_unevenly():
    model = traced()
    x = torch.rand(3, 64, 3, 3)
    expected = model(x)
    streams = MultiStreamModule(model, num_streams=2, cpu_pool=CPUPool(CPUS))
    assert torch.allclose(streams(x), expected, atol=1e-5)
    parts = MultiStreamModule(model, num_streams=2, cpu_pool=CPUPool(CPUS), concat_output=False)(x)
    assert [p.shape[0] for p in parts] == [2, 1]  # the first stream takes the extra row
    assert torch.allclose(torch.cat(parts), expected, atol=1e-5)
    one = MultiStreamModule(model, num_streams=1, cpu_pool=CPUPool(CPUS), concat_output=False)(x)
    assert len(one) == 1 and torch.allclose(one[0], expected, atol=1e-5)
    small = MultiStreamModule(model, num_streams=2, cpu_pool=CPUPool(CPUS), concat_output=False)(x[:1])
    assert len(small) == 1  # a batch smaller than the streams runs on that many streams


def test_streams_run_pinned_each_with_its_own_team():
    streams = MultiStreamModule(traced(), num_streams=len(CPUS), cpu_pool=CPUPool(CPUS))
    streams(torch.rand(4, 64, 3, 3))
    assert [allowed(tid) for tid in streams.stream_threads] == [str(cpu) for cpu in CPUS]
    model = traced()
    known = set(all_masks())  # every thread before the stream exists: its own and its team's are new
    single = MultiStreamModule(model, num_streams=1, cpu_pool=CPUPool(CPUS))
    single(torch.rand(4, 64, 3, 3))
    masks = all_masks()
    whole = f"{CPUS[0]}-{CPUS[-1]}" if len(CPUS) == 2 else ",".join(map(str, CPUS))
    assert masks[single.stream_threads[0]] == whole
    team = [tid for tid in set(masks) - known if tid != single.stream_threads[0]]
    assert len(team) >= len(CPUS) - 1, (team, masks)  # its OpenMP team was made, on the stream's cores
    assert all(masks[tid] == whole for tid in team), {tid: masks[tid] for tid in team}


def test_more_streams_than_cores_is_clamped_with_a_warning():
    with pytest.warns(UserWarning, match=f"using {len(CPUS)} streams"):
        streams = MultiStreamModule(traced(), num_streams=len(CPUS) + 1, cpu_pool=CPUPool(CPUS))
    assert streams.num_streams == len(CPUS)
    assert MultiStreamModule(traced(), num_streams="AUTO", cpu_pool=CPUPool(CPUS)).num_streams == len(CPUS)


def test_hints_split_and_join_nested_values():
    size = len(CPUS)
    a, b, c = torch.rand(size, 1), torch.rand(size, 2), torch.rand(size, 3)
    pool = CPUPool(CPUS)

    def check(model, hint_in, hint_out, *args):  # noqa: ANN001, ANN202
        streams = MultiStreamModule(model, num_streams=size, cpu_pool=pool, input_split_hint=hint_in,
                                    output_concat_hint=hint_out)
        return streams(*args), model(*args)

    got, want = check(Echo(), MultiStreamModuleHint(0, None, 0), MultiStreamModuleHint((0, None, 0)), a, False, c)
    assert torch.equal(got[0], want[0]) and got[1] is False and torch.equal(got[2], want[2])
    got, want = check(EchoOne(), MultiStreamModuleHint((0, 0, 0)), MultiStreamModuleHint((0, 0, 0)), (a, b, c))
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    value = {"key1": a, "key2": b, "key3": c}
    hint = MultiStreamModuleHint({"key1": 0, "key2": 0, "key3": 0})
    got, want = check(EchoOne(), hint, hint, value)
    assert all(torch.equal(got[k], want[k]) for k in value)
    got, want = check(EchoOne(), MultiStreamModuleHint(((0, 0), 0)), MultiStreamModuleHint(((0, 0), 0)), ((a, b), c))
    assert torch.equal(got[0][1], want[0][1]) and torch.equal(got[1], want[1])
    wide = torch.rand(3, size * 2)  # split on dimension 1, joined on it
    got, want = check(EchoOne(), MultiStreamModuleHint(1), MultiStreamModuleHint(1), wide)
    assert torch.equal(got, want)


@pytest.mark.parametrize("make,error,message", [
    (lambda m: MultiStreamModule(m, num_streams="many"), ValueError, "num_streams='many'"),
    (lambda m: MultiStreamModule(m, num_streams=0), ValueError, "1 or more"),
    (lambda m: MultiStreamModule(m, num_streams=1.5), TypeError, "num_streams=1.5"),
    (lambda m: MultiStreamModule(m, input_split_hint=0), TypeError, "must be a MultiStreamModuleHint"),
    (lambda m: MultiStreamModuleHint("0"), TypeError, "is not a dimension"),
    (lambda m: MultiStreamModuleHint((0, 1.5)), TypeError, r"argument 0\[1\]"),
    (lambda m: MultiStreamModule(m, cpu_pool=[0, 1]), TypeError, "CPUPool"),
])
def test_what_ipex_ignored_raises(make, error, message):
    with pytest.raises(error, match=message):
        make(traced())


def test_calls_that_do_not_fit_the_hints_are_errors():
    streams = MultiStreamModule(Echo(), num_streams=len(CPUS), cpu_pool=CPUPool(CPUS),
                                input_split_hint=MultiStreamModuleHint(0, 0))
    with pytest.raises(ValueError, match="does not match the call"):
        streams(torch.rand(2, 1))
    with pytest.raises(ValueError, match="disagree on the batch size"):
        streams(torch.rand(2, 1), torch.rand(3, 1))


def test_an_eager_model_gets_one_warning(caplog):
    multistream._warned_eager = False
    with caplog.at_level(logging.WARNING, logger="launchkit.runtime.multistream"):
        MultiStreamModule(SimpleNet().eval(), num_streams=1, cpu_pool=CPUPool(CPUS))
        MultiStreamModule(SimpleNet().eval(), num_streams=1, cpu_pool=CPUPool(CPUS))
        MultiStreamModule(traced(), num_streams=1, cpu_pool=CPUPool(CPUS))
    warnings = [r.message for r in caplog.records if "holds the GIL" in r.message]
    assert len(warnings) == 1 and "torch.jit.freeze" in warnings[0]


def test_submit_keeps_several_calls_in_flight_and_each_gets_its_own_result():
    model = traced()
    streams = MultiStreamModule(model, num_streams=len(CPUS), cpu_pool=CPUPool(CPUS))
    inputs = [torch.rand(3 + index, 64, 3, 3) for index in range(6)]
    futures = [streams.submit(x) for x in inputs]  # all queued before any is awaited
    for future, x in zip(futures, inputs):
        assert torch.allclose(future.get(timeout=30), model(x), atol=1e-5)
    assert streams(inputs[0]).shape == model(inputs[0]).shape  # the synchronous call is submit + wait


@pytest.mark.skipif(len(CPUS) < 2, reason="two streams need two cores")
def test_a_free_stream_takes_the_next_part_instead_of_waiting_for_a_slow_one():
    # stream 1 is slow (its core is "busy"): with a fixed part per stream every call would wait for
    # it and each stream would run half the parts; taking parts from one queue, stream 0 runs most
    runs: dict[str, int] = {}

    def model(x):  # noqa: ANN001, ANN202
        name = threading.current_thread().name
        runs[name] = runs.get(name, 0) + 1
        if name.endswith("-1"):
            threading.Event().wait(0.2)
        return x

    streams = MultiStreamModule(model, num_streams=2, cpu_pool=CPUPool(CPUS[:2]))
    batch = torch.tensor([[0.0], [1.0]])
    futures = [streams.submit(batch) for _ in range(8)]
    assert all(torch.equal(future.result(timeout=30), batch) for future in futures)  # order kept
    assert runs["launchkit-stream-0"] >= 12 and runs.get("launchkit-stream-1", 0) <= 4, runs


def test_errors_reach_the_caller_through_the_future():
    def failing(x):  # noqa: ANN001, ANN202
        if x.shape[0] == 1 and x[0, 0] == 7:
            raise ValueError("row 7 is bad")
        return x

    streams = MultiStreamModule(failing, num_streams=len(CPUS), cpu_pool=CPUPool(CPUS))
    future = streams.submit(torch.tensor([[7.0]] + [[1.0]] * (len(CPUS) - 1)))
    with pytest.raises(ValueError, match="row 7 is bad"):
        future.result(timeout=30)
    assert torch.equal(streams(torch.tensor([[1.0]])), torch.tensor([[1.0]]))  # the streams live on
