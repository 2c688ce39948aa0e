"""Which workers to keep, start, replace and retire when the server's worker counts change. Pure.

The server plans the cores of *all* its workers at once (one launch plan, disjoint cores), so a
change to one model's worker count can move the cores of every other worker. A worker whose
launch (cores, threads, memory nodes, environment) is unchanged keeps running; a worker whose
launch changed is replaced make-before-break: its successor starts on the new cores, and the old
one is retired only once the successor is ready, so the model never has fewer ready workers than
it had. Workers beyond the new count are retired at once (they finish and drain first).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StartWorker:
    model_key: str
    instance: int  # index into the launch plan's instances
    replaces: str | None = None  # worker id to retire once this one is ready


@dataclass(frozen=True)
class FleetChange:
    keep: tuple[str, ...]
    start: tuple[StartWorker, ...]
    retire: tuple[str, ...]  # retire now

    @property
    def empty(self) -> bool:
        return not self.start and not self.retire


def plan_changes(
    wanted: Sequence[tuple[str, int]],
    running: Mapping[str, Sequence[tuple[str, Hashable]]],
    instance_keys: Sequence[Hashable],
) -> FleetChange:
    """``wanted``: (model key, worker count) in plan order; ``running``: model key → its active
    workers as (worker id, launch key); ``instance_keys``: the launch key of each planned instance,
    handed out to the models in order."""
    total = sum(count for _, count in wanted)
    if total != len(instance_keys):
        raise ValueError(f"{total} workers wanted but {len(instance_keys)} instances planned")
    keep: list[str] = []
    start: list[StartWorker] = []
    retire: list[str] = []
    index = 0
    for model_key, count in wanted:
        indices = range(index, index + count)
        index += count
        unmatched = list(running.get(model_key, ()))
        new: list[int] = []
        for instance in indices:
            match = next((worker for worker in unmatched if worker[1] == instance_keys[instance]), None)
            if match is None:
                new.append(instance)
            else:
                unmatched.remove(match)
                keep.append(match[0])
        for instance in new:
            replaced = unmatched.pop(0)[0] if unmatched else None
            start.append(StartWorker(model_key, instance, replaced))
        retire += [worker_id for worker_id, _ in unmatched]
    wanted_keys = {model_key for model_key, _ in wanted}
    for model_key, workers in running.items():
        if model_key not in wanted_keys:
            retire += [worker_id for worker_id, _ in workers]
    return FleetChange(tuple(keep), tuple(start), tuple(retire))
