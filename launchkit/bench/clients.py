"""One level of load from several client processes, merged exactly.

One Python process with uvloop drives tens of thousands of requests per second, but a replicated
service behind a load balancer can take more than one process can send. With ``--clients P`` the
level's concurrency (or rate, or request count) is split over P processes: this one and P-1
helpers (``python -m launchkit.bench.clients``). Each helper is handed its share, says it is
ready, and starts when told, so all P start together; each sends back its raw samples, and the
merge keeps every latency (no averaging of percentiles: the merged percentiles are computed over
all the latencies, exactly as for one process). perf_counter_ns is CLOCK_MONOTONIC, one clock
for every process of the machine, so start and end times merge too.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
from dataclasses import replace
from typing import Any

from launchkit.bench.loadgen import KEPT_BODIES, LoadSpec, Samples, run_level
from launchkit.bench.requests import Target
from launchkit.core import eventloop
from launchkit.launch.spawn import spawn_async


def split(spec: LoadSpec, clients: int) -> list[LoadSpec]:
    """Each client's share of the level: concurrency, rate and request count divided as evenly as can be."""
    def share(total: int, index: int) -> int:
        return total // clients + (1 if index < total % clients else 0)

    shares = []
    for index in range(clients):
        changes: dict[str, Any] = {}
        if spec.concurrency is not None:
            changes["concurrency"] = share(spec.concurrency, index)
        if spec.rate is not None:
            changes["rate"] = spec.rate / clients
            changes["connections"] = max(spec.connections // clients, 1)
        if spec.requests is not None:
            changes["requests"] = share(spec.requests, index)
        shares.append(replace(spec, **changes))
    return shares


def merge(parts: list[Samples]) -> Samples:
    """Every sample of every client, as if one process had recorded them."""
    merged = Samples(started_ns=min(part.started_ns for part in parts), ended_ns=max(part.ended_ns for part in parts))
    for part in parts:
        merged.latency_ns += part.latency_ns
        merged.uncorrected_ns += part.uncorrected_ns
        merged.completed_at_ns += part.completed_at_ns
        for status, count in part.statuses.items():
            merged.statuses[status] = merged.statuses.get(status, 0) + count
        for kind, count in part.errors.items():
            merged.errors[kind] = merged.errors.get(kind, 0) + count
        for status, bodies in part.error_bodies.items():
            kept = merged.error_bodies.setdefault(status, [])
            kept += bodies[:KEPT_BODIES - len(kept)]
        merged.sent += part.sent
        merged.late_sends += part.late_sends
        merged.received_bytes += part.received_bytes
        merged.body_bytes += part.body_bytes
    return merged


async def run_level_clients(target: Target, requests: list[bytes], spec: LoadSpec, clients: int,
                            progress: Any = None, samples: Samples | None = None) -> Samples:
    """``run_level`` over ``clients`` processes (this one included); the merged samples.

    ``progress`` sees this process's share only. Helpers are killed if the level is cancelled."""
    if clients <= 1:
        return await run_level(target, requests, spec, progress=progress, samples=samples)
    shares = split(spec, clients)
    helpers = []
    try:
        for share in shares[1:]:
            # spawned like every child (own group, dies with bench even on SIGKILL)
            helper = await spawn_async([sys.executable, "-m", "launchkit.bench.clients"],
                                       stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            assert helper.stdin is not None
            helper.stdin.write(pickle.dumps((target, requests, share)))
            await helper.stdin.drain()
            helpers.append(helper)
        for helper in helpers:  # every helper is up with its share of the work: start together
            assert helper.stdout is not None
            if await helper.stdout.readline() != b"ready\n":
                raise ConnectionError("a bench client process did not start (see its error above)")
        for helper in helpers:
            assert helper.stdin is not None
            helper.stdin.write(b"go\n")
            await helper.stdin.drain()
        own = await run_level(target, requests, shares[0], progress=progress, samples=samples)
        parts = [own]
        for helper in helpers:
            assert helper.stdout is not None
            data = await helper.stdout.read()
            if await helper.wait() != 0 or not data:
                raise ConnectionError("a bench client process failed (see its error above)")
            parts.append(pickle.loads(data))
        merged = merge(parts)
        if samples is not None:  # the caller reads the object it passed: it holds every client's samples
            vars(samples).update(vars(merged))
            return samples
        return merged
    finally:
        for helper in helpers:
            if helper.returncode is None:
                helper.kill()
                await helper.wait()


def _helper() -> None:
    """A helper client: read (target, requests, spec), say ready, wait for go, drive, write the samples."""
    target, requests, spec = pickle.load(sys.stdin.buffer)
    sys.stdout.buffer.write(b"ready\n")
    sys.stdout.buffer.flush()
    if sys.stdin.buffer.readline() != b"go\n":
        return
    samples = eventloop.run(run_level(target, requests, spec))
    sys.stdout.buffer.write(pickle.dumps(samples))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    _helper()
