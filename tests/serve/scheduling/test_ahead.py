"""Batches ahead: while every stream is busy, a *full* batch may wait at a busy worker (``ahead``).

The rules (batcher.py's docstring): an idle worker always comes first; only full batches go ahead;
a worker never holds more than it runs plus its places ahead; a retiring worker gets none; batches
ahead that a worker will not run go back to the front of the queue. Checked on fake slots, then
on random sequences of events (hypothesis), with no clock and no processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from launchkit.serve.scheduling.batcher import Job, ModelQueue
from launchkit.serve.wire import ItemRequest


class Slot:
    """A worker as the batcher sees it: it records the batches sent and finishes them when told."""

    def __init__(self, name: str, capacity: int = 1, ahead: int = 1) -> None:
        self.name = name
        self.capacity = capacity
        self.ahead = ahead
        self.ready = True
        self.held: list[list[Job]] = []
        self.drained_count = 0

    def send_batch(self, jobs: list[Job]) -> None:
        self.held.append(jobs)

    def drained(self) -> None:
        self.drained_count += 1

    def finish(self, queue: ModelQueue) -> list[Job]:
        jobs = self.held.pop(0)
        queue.worker_idle(self)
        return jobs


def _run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def _submit(queue: ModelQueue, count: int, start: int = 0) -> list[asyncio.Future]:
    return [queue.submit(ItemRequest(str(start + i), b"", "", [])) for i in range(count)]


def _ids(jobs: list[Job]) -> list[str]:
    return [job.request.request_id for job in jobs]


def test_a_busy_worker_gets_one_full_batch_ahead_and_no_more():
    async def scenario() -> None:
        queue = ModelQueue("m", 1, 0, capacity=100)
        slot = Slot("w")
        queue.worker_ready(slot)
        _submit(queue, 4)
        assert [_ids(jobs) for jobs in slot.held] == [["0"], ["1"]]  # one running, one ahead; two queued
        assert len(queue.queue) == 2
        slot.finish(queue)  # the batch ahead starts; its place ahead takes the next
        assert [_ids(jobs) for jobs in slot.held] == [["1"], ["2"]] and len(queue.queue) == 1

    _run(scenario)


def test_an_idle_worker_comes_before_a_place_ahead():
    async def scenario() -> None:
        queue = ModelQueue("m", 1, 0, capacity=100)
        first, second = Slot("a"), Slot("b")
        queue.worker_ready(first)
        queue.worker_ready(second)
        _submit(queue, 2)
        assert len(first.held) == 1 and len(second.held) == 1  # not both on the first worker
        _submit(queue, 3, start=2)
        assert len(first.held) == 2 and len(second.held) == 2 and len(queue.queue) == 1

    _run(scenario)


def test_only_full_batches_go_ahead():
    async def scenario() -> None:
        queue = ModelQueue("m", 4, 10_000, capacity=100)  # a partial batch waits up to 10 s for its rows
        slot = Slot("w")
        queue.worker_ready(slot)
        _submit(queue, 4)  # full: goes to the idle worker
        _submit(queue, 3, start=4)  # partial, the worker busy: stays in the queue, not ahead
        assert len(slot.held) == 1 and len(queue.queue) == 3
        _submit(queue, 1, start=7)  # now full: ahead
        assert [_ids(jobs) for jobs in slot.held] == [["0", "1", "2", "3"], ["4", "5", "6", "7"]]

    _run(scenario)


def test_a_retiring_worker_gets_nothing_ahead_and_is_drained_once_empty():
    async def scenario() -> None:
        queue = ModelQueue("m", 1, 0, capacity=100)
        old, new = Slot("old"), Slot("new")
        queue.worker_ready(old)
        _submit(queue, 1)
        queue.worker_ready(new)
        old.ready = False  # as a retiring worker is
        queue.retire(old)
        _submit(queue, 3, start=1)
        assert len(old.held) == 1  # only what it already ran
        assert len(new.held) == 2 and len(queue.queue) == 1
        old.finish(queue)
        assert old.drained_count == 1 and len(old.held) == 0

    _run(scenario)


def test_batches_ahead_of_a_dead_worker_go_back_first_in_line():
    async def scenario() -> None:
        queue = ModelQueue("m", 1, 0, capacity=100)
        slot = Slot("w")
        queue.worker_ready(slot)
        futures = _submit(queue, 3)
        running, waiting = slot.held  # "0" runs, "1" waits ahead, "2" is queued
        queue.requeue(waiting)  # the worker died running "0": "1" never started
        queue.worker_gone(slot, "died", coming_back=True)
        assert [job.request.request_id for job in queue.queue] == ["1", "2"]
        assert not futures[1].done()  # waiting for the restart, not failed
        replacement = Slot("w again")
        queue.worker_ready(replacement)
        assert [_ids(jobs) for jobs in replacement.held] == [["1"], ["2"]]

    _run(scenario)


EVENTS = st.lists(st.one_of(st.tuples(st.just("submit"), st.integers(1, 6)),
                            st.tuples(st.just("finish"), st.integers(0, 2)),
                            st.tuples(st.just("retire"), st.integers(0, 2)),
                            st.tuples(st.just("gone"), st.integers(0, 2))), max_size=40)


@settings(max_examples=150, deadline=None)
@given(EVENTS, st.integers(1, 3), st.lists(st.integers(1, 2), min_size=3, max_size=3))
def test_no_worker_ever_holds_more_than_it_runs_and_may_hold_ahead(events, batch_size, streams):
    async def scenario() -> None:
        queue = ModelQueue("m", batch_size, 0, capacity=1000)
        slots = [Slot(str(index), capacity=count, ahead=1 if count == 1 else 0) for index, count in enumerate(streams)]
        for slot in slots:
            queue.worker_ready(slot)
        live = set(range(len(slots)))
        submitted = 0
        for kind, value in events:
            slot = slots[value] if kind != "submit" else None
            if kind == "submit":
                if queue.can_queue():
                    _submit(queue, value, start=submitted)
                    submitted += value
            elif kind == "finish" and value in live and slot.held:
                slot.finish(queue)
            elif kind == "retire" and value in live:
                slot.ready = False  # as a retiring worker is
                queue.retire(slot)
            elif kind == "gone" and value in live:
                live.discard(value)
                queue.requeue([job for jobs in slot.held[slot.capacity:] for job in jobs])
                slot.held.clear()
                queue.worker_gone(slot, "gone", coming_back=False)
            for other in slots:
                assert len(other.held) <= other.capacity + other.ahead
                # a batch ahead is always full; the first ones may be partial (deadline 0: sent at once)
                assert all(len(jobs) == batch_size for jobs in other.held[other.capacity:])
            idle_streams = sum(slot.capacity - len(slot.held) for index, slot in enumerate(slots)
                               if index in live and slot not in queue.retiring and len(slot.held) < slot.capacity)
            assert not (queue.queue and idle_streams), "a request waits while a stream is idle"

    _run(scenario)
