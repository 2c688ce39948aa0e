"""The batching policy, by its definition, on a simulated clock (no processes, no real waiting).

The rule (docs/serving.md "Batching"; batcher.py's docstring):
* the delay counts from the arrival of the oldest waiting request, and a batch never waits past it;
* a full batch goes at once;
* a lone request at low load goes at once.

A simulation drives the queue with an exact arrival schedule and a worker that takes a fixed time
per batch, and records when each request was dispatched. Each rule was checked against a
deliberate mistake in the batcher (the deadline counted from when a worker frees, the deadline
removed, waiting for a full batch, the "quiet" rule removed): each mistake fails a test here.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass, field

import pytest

from launchkit.core.errors import NoWorkerReady, QueueFull
from launchkit.serve.scheduling.batcher import ModelQueue
from launchkit.serve.wire import ItemRequest, ItemResult

MS = 0.001


@dataclass
class Simulation:
    """A fake clock, scheduled events, one worker slot that answers after ``service_ms``."""

    service_ms: float
    now: float = 0.0
    events: list = field(default_factory=list)
    sequence: itertools.count = field(default_factory=itertools.count)
    batches: list[tuple[float, list[str]]] = field(default_factory=list)  # (dispatch time, request ids)
    arrivals: dict[str, float] = field(default_factory=dict)
    ready = True  # the WorkerSlot protocol

    def call_later(self, delay: float, callback):
        event = [self.now + delay, next(self.sequence), callback, False]
        heapq.heappush(self.events, event)

        class Handle:
            def cancel(self) -> None:
                event[3] = True

        return Handle()

    def send_batch(self, jobs) -> None:
        self.batches.append((self.now, [job.request.request_id for job in jobs]))
        for job in jobs:
            job.future.set_result(ItemResult(200, "text/plain", b"", []))
        self.call_later(self.service_ms * MS, lambda: self.queue.worker_idle(self))

    def drained(self) -> None:
        pass

    def run(self, queue: ModelQueue, arrivals_ms: list[float], busy_until_ms: float = 0.0,
            together: int = 1) -> dict[str, float]:
        """Feed requests at ``arrivals_ms`` (``together`` per arrival, like a v2 request's rows); the
        worker joins at ``busy_until_ms``. Returns each request's wait."""
        self.queue = queue
        queue.members.append(self)  # ready from the start; idle from busy_until_ms
        self.call_later(busy_until_ms * MS, lambda: queue.worker_idle(self))
        for index, at in enumerate(arrivals_ms):
            ids = [f"r{index}" if together == 1 else f"r{index}.{row}" for row in range(together)]
            for request_id in ids:
                self.arrivals[request_id] = at * MS
            self.call_later(at * MS, lambda ids=ids: queue.submit_many([ItemRequest(i, b"", "", []) for i in ids]))
        while self.events:
            due, _, callback, cancelled = heapq.heappop(self.events)
            self.now = max(self.now, due)
            if not cancelled:
                callback()
        dispatched = {rid: at for at, ids in self.batches for rid in ids}
        assert set(dispatched) == set(self.arrivals), "every request is dispatched exactly once"
        return {rid: dispatched[rid] - self.arrivals[rid] for rid in self.arrivals}


def simulate(batch_size: int, delay_ms: float, arrivals_ms: list[float], service_ms: float = 1.0,
             busy_until_ms: float = 0.0, together: int = 1) -> tuple[dict[str, float], Simulation]:
    async def scenario():
        sim = Simulation(service_ms)
        queue = ModelQueue("m", batch_size, delay_ms, capacity=10_000, clock=lambda: sim.now,
                           call_later=sim.call_later)
        return sim.run(queue, arrivals_ms, busy_until_ms, together), sim

    return asyncio.run(scenario())


# --- the rule, a clause at a time -----------------------------------------------------------------


@pytest.mark.parametrize("service_ms", [1.0, 8.0])
def test_a_batch_never_waits_past_the_delay_while_requests_keep_coming(service_ms):
    """Arrivals every 2 ms never fill a batch of 8 within 10 ms, and never stop (the "quiet" rule
    cannot step in): every request is still dispatched within the delay of its arrival. With a
    worker busy 8 ms per batch, about 4 are waiting each time it frees: they go, rather than wait
    for 4 more (which a deadline counted from that moment would allow)."""
    waits, _ = simulate(batch_size=8, delay_ms=10, arrivals_ms=[2.0 * i for i in range(200)], service_ms=service_ms)
    assert max(waits.values()) <= 10 * MS + 1e-9, f"longest wait {max(waits.values()) / MS:.2f} ms"


def test_the_delay_counts_from_the_oldest_arrival_not_from_when_a_worker_frees():
    """The worker is busy until 8 ms; requests arrive every 2 ms from 0. Counted from the oldest
    arrival, the first request must leave by 10 ms (TorchServe counts from when the worker asks:
    it would hold it until the batch of 8 fills at 14 ms)."""
    waits, sim = simulate(batch_size=8, delay_ms=10, arrivals_ms=[2.0 * i for i in range(40)], busy_until_ms=8)
    assert waits["r0"] <= 10 * MS + 1e-9, f"the oldest request waited {waits['r0'] / MS:.2f} ms"
    assert sim.batches[0][0] == pytest.approx(8 * MS)  # it went as soon as the worker was free


def test_a_full_batch_goes_at_once():
    """Requests of 8 rows each (a v2 tensor's rows arrive together), 20 ms apart, idle worker: each
    is one batch of 8 at once, although more rows keep coming and the delay is long."""
    waits, sim = simulate(batch_size=8, delay_ms=100, arrivals_ms=[20.0 * i for i in range(5)], together=8)
    assert [len(ids) for _, ids in sim.batches] == [8] * 5
    assert max(waits.values()) == 0


def test_a_full_queue_goes_as_soon_as_a_worker_frees():
    waits, sim = simulate(batch_size=4, delay_ms=100, arrivals_ms=[0.0] * 12, service_ms=3, busy_until_ms=5)
    assert [(round(at / MS, 3), len(ids)) for at, ids in sim.batches] == [(5.0, 4), (8.0, 4), (11.0, 4)]


def test_a_lone_request_at_low_load_goes_at_once():
    """One request every 300 ms with a 100 ms delay: none of them waits for batch-mates."""
    waits, _ = simulate(batch_size=8, delay_ms=100, arrivals_ms=[300.0 * i for i in range(10)])
    assert max(waits.values()) == 0


def test_the_tail_of_a_burst_does_not_wait_out_the_delay():
    """44 arrivals 0.1 ms apart, then silence: full batches of 8 form, and the partial batch left at
    the end goes once the silence has lasted a few arrival intervals (1.2 ms here), not at the
    10 ms deadline: nothing more is coming to fill it."""
    waits, sim = simulate(batch_size=8, delay_ms=10, arrivals_ms=[0.1 * i for i in range(44)], service_ms=0.1)
    assert [len(ids) for _, ids in sim.batches][-5:] == [8, 8, 8, 8, 2]
    assert waits["r43"] <= 2 * MS, f"the last request waited {waits['r43'] / MS:.2f} ms"


def test_a_burst_fills_batches():
    """Arrivals 0.1 ms apart fill batches of 8 (waiting a little is the point of batching)."""
    _, sim = simulate(batch_size=8, delay_ms=10, arrivals_ms=[0.1 * i for i in range(64)], service_ms=0.5)
    sizes = [len(ids) for _, ids in sim.batches]
    assert sum(sizes) == 64 and sizes.count(8) >= 6, sizes


# --- errors and workers ---------------------------------------------------------------------------


class Slot:
    ready = True

    def send_batch(self, jobs) -> None:
        for job in jobs:
            job.future.set_result(ItemResult(200, "text/plain", job.request.body, []))

    def drained(self) -> None:
        pass


def request(i: int) -> ItemRequest:
    return ItemRequest(str(i), str(i).encode(), "", [])


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

    asyncio.run(scenario())


def test_lost_last_worker_fails_waiting_requests_with_503():
    async def scenario():
        queue = ModelQueue("m", 4, 10, capacity=10)
        slot = Slot()
        queue.members.append(slot)
        future = queue.submit(request(1))
        queue.worker_gone(slot, error="boom")
        result = await future
        assert result.status == 503 and b"lost its last worker" in result.body
        with pytest.raises(NoWorkerReady, match="boom"):  # the next request learns why
            queue.submit(request(2))

    asyncio.run(scenario())
