"""The batching policy, driven by hand on an event loop (no processes)."""

from __future__ import annotations

import asyncio
import time

import pytest

from launchkit.core.errors import NoWorkerReady, QueueFull
from launchkit.serve.scheduling.batcher import ModelQueue
from launchkit.serve.wire import ItemRequest, ItemResult


class Slot:
    ready = True

    def __init__(self) -> None:
        self.batches: list[tuple[float, list]] = []

    def send_batch(self, jobs) -> None:
        self.batches.append((time.monotonic(), jobs))
        for job in jobs:
            job.future.set_result(ItemResult(200, "text/plain", job.request.body, []))


def request(i: int) -> ItemRequest:
    return ItemRequest(str(i), str(i).encode(), "", [])


def run(coroutine):
    return asyncio.run(coroutine)


def test_no_worker_and_full_queue_are_different_errors():
    async def scenario():
        queue = ModelQueue("m", 4, 10, capacity=2)
        with pytest.raises(NoWorkerReady, match="no worker ready"):
            queue.submit(request(0))
        queue.members.append(Slot())  # ready but busy: nothing idle, so requests wait
        queue.submit(request(1))
        queue.submit(request(2))
        with pytest.raises(QueueFull, match="queue is full"):
            queue.submit(request(3))

    run(scenario())


def test_full_batch_goes_at_once_and_delay_counts_from_oldest_arrival():
    async def scenario():
        queue = ModelQueue("m", 4, 200, capacity=100)
        slot = Slot()
        queue.members.append(slot)
        futures = [queue.submit(request(i)) for i in range(6)]  # worker busy: all wait
        queue.idle.append(slot)
        await asyncio.sleep(0)
        queue._dispatch()
        assert [len(jobs) for _, jobs in slot.batches] == [4]
        # the 2 left: their batch is not full; the worker comes back 50 ms later
        await asyncio.sleep(0.05)
        queue.idle.append(slot)
        queue._dispatch()
        await asyncio.wait_for(asyncio.gather(*futures), 1.0)
        assert [len(jobs) for _, jobs in slot.batches] == [4, 2]

    run(scenario())


def test_burst_fills_batches_and_lone_request_goes_immediately():
    async def scenario():
        queue = ModelQueue("m", 4, 100, capacity=100)
        slot = Slot()
        queue.worker_ready(slot)

        def back_to_idle(jobs, original=slot.send_batch):
            original(jobs)
            asyncio.get_running_loop().call_soon(queue.worker_idle, slot)

        slot.send_batch = back_to_idle
        # a lone request after a long pause: no waiting
        started = time.monotonic()
        await queue.submit(request(0))
        assert time.monotonic() - started < 0.02
        # a burst: arrivals 1 ms apart fill batches of 4 instead of going one by one
        futures = []
        for i in range(12):
            futures.append(queue.submit(request(i)))
            await asyncio.sleep(0.001)
        await asyncio.wait_for(asyncio.gather(*futures), 2.0)
        sizes = [len(jobs) for _, jobs in slot.batches[1:]]
        assert sum(sizes) == 12 and max(sizes) == 4

    run(scenario())


def test_waiting_never_exceeds_the_delay():
    async def scenario():
        queue = ModelQueue("m", 8, 30, capacity=100)
        slot = Slot()
        queue.worker_ready(slot)
        queue._interval = 0.001  # pretend a burst is under way
        queue._last_arrival = time.monotonic()
        started = time.monotonic()
        await asyncio.wait_for(queue.submit(request(1)), 1.0)
        assert time.monotonic() - started < 0.03 + 0.02

    run(scenario())


def test_lost_last_worker_fails_waiting_requests_with_503():
    async def scenario():
        queue = ModelQueue("m", 4, 10, capacity=10)
        slot = Slot()
        queue.members.append(slot)
        future = queue.submit(request(1))
        queue.worker_gone(slot, error="boom")
        result = await future
        assert result.status == 503 and b"lost its last worker" in result.body

    run(scenario())
