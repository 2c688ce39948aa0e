"""The HTTP load generator: closed loop (concurrency) and open loop (rate), on keep-alive connections.

Built on asyncio protocols with httptools' response parser on uvloop, requests pre-encoded as
bytes: the client must cost less CPU than the server it measures (it shares the machine).
Latencies are recorded in nanoseconds (perf_counter_ns) into one list per run.

Open loop follows wrk2: every request has an intended send time (constant or Poisson spacing);
its latency counts from that intended time, so a stalled server cannot hide its stall by
slowing the client down (coordinated omission). The uncorrected latency (from the actual send)
is recorded beside it, with the number of sends that left late.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from launchkit.bench.requests import Target


@dataclass
class Samples:
    """What one level of load recorded. Times are nanoseconds on perf_counter_ns's clock."""

    started_ns: int = 0
    ended_ns: int = 0
    latency_ns: list[int] = field(default_factory=list)  # 2xx only; from the intended send time
    uncorrected_ns: list[int] = field(default_factory=list)  # 2xx only; from the actual send time
    completed_at_ns: list[int] = field(default_factory=list)  # per 2xx response, for latency over time
    statuses: dict[int, int] = field(default_factory=dict)  # every HTTP status seen, 2xx included
    errors: dict[str, int] = field(default_factory=dict)  # connect / timeout / reset / protocol
    error_bodies: dict[int, list[bytes]] = field(default_factory=dict)  # the first few bodies of each non-2xx status
    sent: int = 0
    late_sends: int = 0
    received_bytes: int = 0  # every byte of every answer, heads included (ab's "Total transferred")
    body_bytes: int = 0  # the answers' bodies (ab's "HTML transferred")

    @property
    def ok(self) -> int:
        return len(self.latency_ns)

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300) + sum(self.errors.values())


KEPT_BODIES = 3  # per non-2xx status: enough to say why requests failed
KEPT_BODY_BYTES = 2000


class _Connection(asyncio.Protocol):
    def __init__(self, run: "_Run") -> None:
        import httptools

        self.run = run
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.intended_ns = 0
        self.sent_ns = 0
        self.busy = False
        self.closing = False  # the server said Connection: close (or HTTP/1.0 without keep-alive)
        self.answering = False  # bytes of the answer to the request in flight have arrived
        self.body: list[bytes] | None = None  # collected only for a non-2xx answer whose kind is still wanted

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answering = True
        if self.run.record:
            self.run.samples.received_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except Exception:  # noqa: BLE001 - httptools raises its own error types
            self._fail("protocol")

    def connection_lost(self, exc: Exception | None) -> None:
        status = self.parser.get_status_code() if self.busy and self.answering and exc is None else 0
        if status and not self.parser.should_keep_alive():
            # a body without a length ends with the connection (httptools cannot be told of EOF)
            self.closing = True
            self.busy = False
            self.run.completed(self, status, time.perf_counter_ns())
        elif self.busy:
            self._fail("reset", reconnect=False)
        self.run.lost(self)

    # httptools callbacks
    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 300 and self.run.record and len(self.run.samples.error_bodies.get(status, ())) < KEPT_BODIES:
            self.body = []

    def on_body(self, chunk: bytes) -> None:
        if self.run.record:
            self.run.samples.body_bytes += len(chunk)
        if self.body is not None and sum(map(len, self.body)) < KEPT_BODY_BYTES:
            self.body.append(chunk)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            return  # an interim answer (100 Continue): the real one follows
        if self.body is not None:
            kept = self.run.samples.error_bodies.setdefault(status, [])
            if len(kept) < KEPT_BODIES:
                kept.append(b"".join(self.body)[:KEPT_BODY_BYTES])
            self.body = None
        now = time.perf_counter_ns()
        self.busy = False
        self.answering = False
        if not self.parser.should_keep_alive():
            self.closing = True
        self.run.completed(self, status, now)

    def send(self, request: bytes, intended_ns: int) -> None:
        # Timeouts are found by _Run's sweep, not a timer per request: a TimerHandle per
        # request cost about a fifth of the client's CPU per request.
        self.busy = True
        self.intended_ns = intended_ns
        self.sent_ns = time.perf_counter_ns()
        self.transport.write(request)  # type: ignore[union-attr]

    def _fail(self, kind: str, reconnect: bool = True) -> None:
        if not self.busy:
            return
        self.busy = False
        self.run.failed(self, kind)
        if self.transport is not None and reconnect:
            self.transport.abort()


class _Run:
    def __init__(self, target: Target, requests: list[bytes], timeout_s: float, record: bool,
                 samples: Samples) -> None:
        self.target = target
        self.requests = requests
        self.timeout_s = timeout_s
        self.record = record
        self.samples = samples
        self.next_request = 0
        self.on_free: "Callable[..., Any] | None" = None
        self.connections: set[_Connection] = set()
        self.stopping = False

    def request_bytes(self) -> bytes:
        request = self.requests[self.next_request % len(self.requests)]
        self.next_request += 1
        return request

    async def connect(self) -> _Connection | None:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(lambda: _Connection(self), self.target.host, self.target.port)
        except OSError:
            self.samples.errors["connect"] = self.samples.errors.get("connect", 0) + 1
            return None
        self.connections.add(connection)
        return connection

    def completed(self, connection: _Connection, status: int, now: int) -> None:
        if self.record:
            samples = self.samples
            statuses = samples.statuses
            statuses[status] = statuses.get(status, 0) + 1
            if 200 <= status < 300:
                samples.latency_ns.append(now - connection.intended_ns)
                samples.uncorrected_ns.append(now - connection.sent_ns)
                samples.completed_at_ns.append(now)
        if connection.closing:  # not reusable: a fresh connection takes its place
            if connection.transport is not None:
                connection.transport.close()
            if self.on_free is not None and not self.stopping:
                self._replace(connection)
            return
        on_free = self.on_free
        if on_free is not None:
            on_free(connection)

    def failed(self, connection: _Connection, kind: str) -> None:
        if self.record:
            self.samples.errors[kind] = self.samples.errors.get(kind, 0) + 1
        if self.on_free is not None and not self.stopping:
            asyncio.get_running_loop().call_soon(self._replace, connection)

    def lost(self, connection: _Connection) -> None:
        self.connections.discard(connection)

    def _replace(self, connection: _Connection) -> None:
        async def reconnect() -> None:
            fresh = await self.connect()
            if fresh is not None and self.on_free is not None:
                self.on_free(fresh)
            elif fresh is None and self.on_free is not None and not self.stopping:
                await asyncio.sleep(0.05)
                self._replace(connection)

        asyncio.ensure_future(reconnect())

    async def sweep_timeouts(self) -> None:
        """Every 50 ms, fail the requests older than the timeout (their connection is reset)."""
        limit_ns = int(self.timeout_s * 1e9)
        while True:
            await asyncio.sleep(0.05)
            now = time.perf_counter_ns()
            for connection in list(self.connections):
                if connection.busy and now - connection.sent_ns > limit_ns:
                    connection._fail("timeout")

    async def close(self) -> None:
        self.stopping = True
        self.on_free = None
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()


@dataclass(frozen=True)
class LoadSpec:
    """One level of load: closed loop at ``concurrency`` or open loop at ``rate`` requests/s."""

    concurrency: int | None = None
    rate: float | None = None
    poisson: bool = False
    requests: int | None = None
    duration_s: float | None = None
    connections: int = 64  # open loop: connections available to keep to the schedule
    timeout_s: float = 30.0


async def run_level(target: Target, requests: list[bytes], spec: LoadSpec, record: bool = True,
                    progress: "Callable[..., Any] | None" = None, samples: Samples | None = None) -> Samples:
    """Drive one level of load until ``spec.requests`` are answered or ``spec.duration_s`` has passed.

    ``samples``: where to record (the caller's object, so an interrupted level keeps what it measured)."""
    # The samples are flat lists of ints (no cycles): the cyclic GC only costs time during a run.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return await _run_level(target, requests, spec, record, progress, samples or Samples())
    finally:
        if gc_was_enabled:
            gc.enable()


async def _run_level(target: Target, requests: list[bytes], spec: LoadSpec, record: bool,
                     progress: "Callable[..., Any] | None", samples: Samples) -> Samples:
    run = _Run(target, requests, spec.timeout_s, record, samples)
    done = asyncio.get_running_loop().create_future()
    total = spec.requests
    deadline_ns = (time.perf_counter_ns() + int(spec.duration_s * 1e9)) if spec.duration_s else None

    def finished() -> bool:
        if total is not None and run.samples.sent >= total:
            return True
        return deadline_ns is not None and time.perf_counter_ns() >= deadline_ns

    run.samples.started_ns = time.perf_counter_ns()
    if spec.rate is None:
        concurrency = spec.concurrency or 1

        def on_free(connection: _Connection) -> None:
            samples = run.samples
            if (total is not None and samples.sent >= total) or (
                    deadline_ns is not None and time.perf_counter_ns() >= deadline_ns):
                if not any(c.busy for c in run.connections) and not done.done():
                    done.set_result(None)
                return
            samples.sent += 1
            # closed loop: intended and actual send time are the same instant
            connection.busy = True
            connection.intended_ns = connection.sent_ns = time.perf_counter_ns()
            connection.transport.write(run.requests[run.next_request % len(run.requests)])  # type: ignore[union-attr]
            run.next_request += 1

        run.on_free = on_free
        connections = await asyncio.gather(*(run.connect() for _ in range(concurrency)))
        live = [c for c in connections if c is not None]
        if not live:
            raise ConnectionError(f"cannot connect to {target.host}:{target.port}")
        for connection in live:
            on_free(connection)
    else:
        await _open_loop(run, spec, done, finished)
    ticker = asyncio.ensure_future(_tick(run, progress)) if progress else None
    sweeper = asyncio.ensure_future(run.sweep_timeouts()) if spec.timeout_s else None
    try:
        await done
    finally:
        for task in (ticker, sweeper):
            if task is not None:
                task.cancel()
        run.samples.ended_ns = time.perf_counter_ns()
        await run.close()
    return run.samples


async def _open_loop(run: _Run, spec: LoadSpec, done: asyncio.Future, finished) -> None:
    assert spec.rate is not None
    interval_ns = 1e9 / spec.rate
    idle: deque[_Connection] = deque()
    backlog: deque[int] = deque()  # intended send times waiting for a free connection

    def all_answered() -> bool:
        return scheduler.done() and not backlog and not any(c.busy for c in run.connections)

    def on_free(connection: _Connection) -> None:
        if connection.transport is not None and not connection.transport.is_closing():
            idle.append(connection)
        _send_waiting(late=True)
        if all_answered() and not done.done():
            done.set_result(None)

    def _send_waiting(late: bool = False) -> None:
        """Send what is due. ``late``: these requests waited for a connection to come free, i.e.
        the server was not keeping up; timer jitter is not lateness (its delay is in the
        corrected latency anyway)."""
        while backlog and idle:
            connection = idle.popleft()
            if connection.transport is None or connection.transport.is_closing():
                continue
            intended = backlog.popleft()
            if late:
                run.samples.late_sends += 1
            connection.send(run.request_bytes(), intended)

    run.on_free = on_free
    connections = await asyncio.gather(*(run.connect() for _ in range(spec.connections)))
    idle.extend(c for c in connections if c is not None)
    if not idle:
        raise ConnectionError(f"cannot connect to {run.target.host}:{run.target.port}")
    rng = random.Random(0)

    async def schedule() -> None:
        next_ns = float(time.perf_counter_ns())
        while not finished():
            now = time.perf_counter_ns()
            if next_ns > now:
                await asyncio.sleep((next_ns - now) / 1e9)
                continue
            while next_ns <= now and not finished():  # everything due by now goes in one wake-up
                run.samples.sent += 1
                backlog.append(int(next_ns))
                next_ns += rng.expovariate(1.0) * interval_ns if spec.poisson else interval_ns
            _send_waiting()

    scheduler = asyncio.ensure_future(schedule())
    await scheduler
    if all_answered() and not done.done():
        done.set_result(None)


async def _tick(run: _Run, progress) -> None:
    while True:
        await asyncio.sleep(0.25)
        progress(run.samples)
