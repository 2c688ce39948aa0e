"""The states of a server's worker, the moves between them, and the one readiness predicate.

::

    STARTING ──ready──▶ READY ◀──result── BUSY
       │                  │  └──batch──────▲
       │                  └──retire──▶ RETIRING ──drained──▶ STOPPING
       │retire (not connected yet): killed ─────────────────▶ STOPPING
       ▼                                                         │
    EXITED ◀── the connection closed or the process ended, from any live state
       ├──▶ RESTARTING (after a crash; backoff) ──▶ STARTING
       ├──▶ FAILED (its model failed to load max_load_failures times in a row: the model is marked
       │            failed; it is still retried, at the backoff's cap) ──▶ STARTING
       └──▶ STOPPED (retired, or the server is stopping): gone for good

A worker is *ready* — it takes new batches — in READY and BUSY only (:attr:`WorkerState.ready`).
The batcher, the management API, the metrics and the fleet all ask that one property. A
RETIRING worker still runs batches, but only to drain its model's queue when no ready worker is
left (see the batcher); it never counts as ready.
"""

from __future__ import annotations

import enum


class WorkerState(enum.Enum):
    STARTING = "starting"  # process started, model loading
    READY = "ready"  # connected and idle
    BUSY = "busy"  # running a batch
    RETIRING = "retiring"  # out of service: finishes its work, helps drain, then is told to stop
    STOPPING = "stopping"  # told to exit (or killed while still loading)
    EXITED = "exited"  # its process ended or its connection closed; what happens next is being decided
    RESTARTING = "restarting"  # waiting out the backoff before it is started again
    FAILED = "failed"  # its model failed to load too many times in a row: the model is marked failed; retried
    STOPPED = "stopped"  # gone for good

    @property
    def ready(self) -> bool:
        """Whether the worker takes new batches: the server's one readiness predicate."""
        return self in (WorkerState.READY, WorkerState.BUSY)

    @property
    def alive(self) -> bool:
        """Whether a process of this worker may be running (its memory is worth reading)."""
        return self not in (WorkerState.EXITED, WorkerState.RESTARTING, WorkerState.FAILED, WorkerState.STOPPED)


TRANSITIONS: dict[WorkerState, frozenset[WorkerState]] = {
    WorkerState.STARTING: frozenset({WorkerState.READY, WorkerState.STOPPING, WorkerState.EXITED,
                                     WorkerState.STOPPED}),
    WorkerState.READY: frozenset({WorkerState.BUSY, WorkerState.RETIRING, WorkerState.STOPPING,
                                  WorkerState.EXITED, WorkerState.STOPPED}),
    WorkerState.BUSY: frozenset({WorkerState.READY, WorkerState.RETIRING, WorkerState.STOPPING,
                                 WorkerState.EXITED, WorkerState.STOPPED}),
    WorkerState.RETIRING: frozenset({WorkerState.RETIRING, WorkerState.STOPPING, WorkerState.EXITED,
                                     WorkerState.STOPPED}),
    WorkerState.STOPPING: frozenset({WorkerState.STOPPING, WorkerState.EXITED, WorkerState.STOPPED}),
    WorkerState.EXITED: frozenset({WorkerState.RESTARTING, WorkerState.FAILED, WorkerState.STOPPED}),
    WorkerState.RESTARTING: frozenset({WorkerState.STARTING, WorkerState.STOPPED}),
    WorkerState.FAILED: frozenset({WorkerState.STARTING, WorkerState.STOPPED}),
    WorkerState.STOPPED: frozenset(),
}


def check_transition(old: WorkerState, new: WorkerState) -> None:
    """A move the diagram above does not have is a bug in the server, never the user's doing."""
    if new not in TRANSITIONS[old]:
        raise AssertionError(f"worker state {old.value} → {new.value} is not a documented transition")
