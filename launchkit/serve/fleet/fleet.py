"""The server's workers as a whole: plan their cores together, start, replace and retire them.

Every change (start-up, register, scale, unregister) goes through :meth:`Fleet.apply`: it plans
one launch for all workers of all models (so no two workers share a core), works out with
:func:`plan_changes` which workers keep their cores, and starts or retires the rest. Changes are
serialised by ``Fleet.lock``; the management API holds it for the whole of a request.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import shlex
from collections.abc import Hashable
from dataclasses import dataclass, replace
from typing import Any

from launchkit.core.cpulist import format_cpu_list
from launchkit.core.errors import PlanError
from launchkit.launch.cpu_options import CpuOptions
from launchkit.launch.flags import parse_launcher_args
from launchkit.launch.request import RunRequest, plan_run
from launchkit.launch.runplan import InstanceLaunch, ProgramSpec
from launchkit.serve.fleet.plan import FleetChange, plan_changes
from launchkit.serve.fleet.pool import WorkerPool
from launchkit.serve.fleet.process import WorkerProcess, WorkerSpec
from launchkit.serve.scheduling.registry import Registry, ServedModel
from launchkit.serve.settings import ServerConfig

logger = logging.getLogger(__name__)
SPIN_MODEL_BYTES = 8 * 2**20
ONE_CORE_MODEL_BYTES = 2**20


def _weights_bytes(model: ServedModel) -> int:
    files = [model.model_dir / model.manifest.serialized_file] if model.manifest.serialized_file else []
    return sum(path.stat().st_size for path in files if path.is_file())


def wait_policy(model: ServedModel, requested: str) -> str:
    """How a model's OpenMP threads wait between parallel regions.

    ``--omp-wait spin|brief|passive`` decides for every model. ``auto``: a model whose weights are
    over 8 MiB computes for milliseconds per request and its threads spin as the runtime's default
    has them; a small model's spin briefly: they stay awake between one call's operators (threads
    that sleep at once made every operator wait for a wake-up) and yield the CPU the frontend needs
    soon after a batch ends. Measured by benchmarks/threads.py (docs/figures.md, "A worker's threads").
    """
    if requested != "auto":
        return requested
    return "spin" if _weights_bytes(model) > SPIN_MODEL_BYTES else "brief"


def cores_used(model: ServedModel, cpu: CpuOptions) -> int | None:
    """How many cores of its share a model's worker runs on; None: all of them.

    A model under 1 MiB served one request at a time computes for tens of microseconds a call: a team
    of threads costs it more in waking and waiting than it gains, so its worker runs on one core and
    one thread (benchmarks/threads.py --part served and grpc_vs_http.py --worker-cores; docs/figures.md,
    "A worker's threads"). The user's own ``--ncores-per-instance`` decides instead, and a model with
    batches or streams keeps the share it was given."""
    if cpu.ncores_per_instance is not None or model.settings.batch_size > 1 or model.settings.streams > 1:
        return None
    return 1 if _weights_bytes(model) < ONE_CORE_MODEL_BYTES else None


def base_run_request(config: ServerConfig, topology_root: str | None) -> tuple[RunRequest, tuple[str, ...]]:
    """The launcher request every worker plan starts from, and warnings about ignored settings."""
    program = ProgramSpec("launchkit.serve.worker", module=True)  # runs launchkit/serve/worker/__main__.py
    # Workers default to GNU OpenMP, the runtime pip's torch links; measured in docs/figures.md ("Serving figures").
    run_request = parse_launcher_args(["--omp-runtime", "gnu", *shlex.split(config.cpu_launcher_args)], program)
    warnings = []
    if run_request.cpu.ninstances is not None or run_request.cpu.instance_indices is not None:
        warnings.append("cpu_launcher_args --ninstances/--rank ignored: the server runs one launcher instance "
                        "per worker")
    if config.cpu_launcher_enable is False:
        run_request = replace(run_request, binding=replace(run_request.binding, cpu_affinity=False, numactl=False))
        warnings.append("cpu_launcher_enable=false: workers are not pinned (their thread counts are still split)")
    cpu = replace(run_request.cpu, instance_indices=None, latency_mode=False, throughput_mode=False)
    return replace(run_request, cpu=cpu, topology_root=topology_root), tuple(warnings)


def launch_key(launch: InstanceLaunch) -> Hashable:
    return (launch.cpus, launch.mem_nodes, launch.threads, tuple(sorted(launch.env.items())))


@dataclass(frozen=True)
class PlannedLaunches:
    per_model: dict[str, list[InstanceLaunch]]  # model key → its instances, in order
    plan: Any  # the RunPlan (runtime, memory binding, warnings) for the start-up report


class Fleet:
    def __init__(self, registry: Registry, pool: WorkerPool, run_request: RunRequest,
                 warnings: tuple[str, ...] = (), max_load_failures: int = 3, share_cores: bool = False,
                 batch_ahead: bool = True) -> None:
        self.registry = registry
        self.batch_ahead = batch_ahead  # single-stream workers may hold a full batch ahead
        self.share_cores = share_cores  # more workers than cores: hand the cores out round-robin
        self.max_load_failures = max_load_failures
        self.pool = pool
        self.run_request = run_request
        self.warnings = warnings
        self.lock = asyncio.Lock()
        self.last_plan: Any = None
        self._numbers: dict[str, itertools.count[int]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def plan(self) -> PlannedLaunches:
        """Launches for every model's wanted worker count."""
        models = self.registry.all()
        wanted = [(model, model.settings.workers) for model in models]
        total = sum(count for _, count in wanted)
        if total == 0:
            return PlannedLaunches({model.key: [] for model in models}, self.last_plan)
        shapes = {model.key: (wait_policy(model, self.run_request.omp_wait), cores_used(model, self.run_request.cpu))
                  for model in models}
        plans, slots = self._plans(total, sorted(set(shapes.values()), key=str), wanted)
        per_model: dict[str, list[InstanceLaunch]] = {}
        index = 0
        for model, count in wanted:
            # with shared cores, worker i runs on slot i mod slots: the cores go round
            per_model[model.key] = [plans[shapes[model.key]].instances[i % slots] for i in range(index, index + count)]
            index += count
        return PlannedLaunches(per_model, next(iter(plans.values())))

    def _plans(self, total: int, shapes: list[tuple[str, int | None]],
               wanted: list[tuple[ServedModel, int]]) -> tuple[dict[tuple[str, int | None], Any], int]:
        """One launch plan per worker shape in use (OpenMP wait policy, cores used of each share): the
        CPU split is the same in each, a shape only narrows a share or changes OpenMP's variables.
        And how many distinct core slots they hold."""
        def plan_for(count: int) -> dict[tuple[str, int | None], Any]:
            cpu = replace(self.run_request.cpu, ninstances=count)
            return {(wait, used): plan_run(replace(self.run_request, cpu=replace(cpu, cores_used=used), omp_wait=wait))[1]
                    for wait, used in shapes}

        try:
            return plan_for(total), total
        except PlanError as error:
            first_error = error
        for slots in range(total - 1, 0, -1) if self.share_cores else ():
            try:
                plans = plan_for(slots)
            except PlanError:
                continue
            logger.warning("%d workers share %d core slot(s) (--allow-shared-cores or cpu_launcher_enable=false): "
                           "workers on one core take turns, so each runs about %.1f× slower under load and its "
                           "latency varies with the others' work", total, slots, total / slots)
            return plans, slots
        listing = ", ".join(f"{model.name}: {count} (v{model.version})" for model, count in wanted)
        # the launcher's reason, in the server's terms (its advice names launchkit run's flags)
        reason = str(first_error).split(" Use --ninstances")[0].split(" Lower --ninstances")[0]
        reason = reason.replace("instances", "workers").replace("instance", "worker")
        raise PlanError(
            f"cannot give {total} worker(s) ({listing}) their own cores: {reason} "
            "Lower --workers (minWorkers in the archive, initial_workers or min_worker in the management API), "
            "serve fewer models, or let workers share cores (--allow-shared-cores, or cpu_launcher_enable=false "
            "in config.properties)."
        ) from None

    def apply(self, only: set[str] | None = None) -> list[WorkerProcess]:
        """Bring the running workers in line with the wanted counts; returns the workers started.

        ``only``: start and retire workers of these models alone, leaving the others where they
        are for now (a model being registered loads first; the others move once it is ready, so
        a registration that fails moves nothing). Raises PlanError, changing nothing, when the
        counts do not fit the machine.
        """
        planned = self.plan()
        if planned.plan is not None:
            self.last_plan = planned.plan
        models = {model.key: model for model in self.registry.all()}
        for model in models.values():
            model.queue.configured_workers = model.settings.workers
        launches = [launch for key in models for launch in planned.per_model[key]]
        running = {key: [(w.worker_id, launch_key(w.launch)) for w in model.workers if not w.retiring]
                   for key, model in models.items()}
        change: FleetChange = plan_changes([(key, len(planned.per_model[key])) for key in models], running,
                                           [launch_key(launch) for launch in launches])
        by_id = {w.worker_id: w for model in models.values() for w in model.workers}
        started = []
        for item in change.start:
            if only is not None and item.model_key not in only:
                continue
            worker = self._new_worker(models[item.model_key], launches[item.instance])
            started.append(worker)
            cpus = format_cpu_list(worker.launch.cpus)
            if item.replaces is not None:
                old = by_id[item.replaces]
                self.track(self._replace_when_ready(worker, old))
                if self.pool.started:
                    logger.info("worker %s starts on CPUs %s; it replaces %s (CPUs %s) once ready", worker.worker_id,
                                cpus, old.worker_id, format_cpu_list(old.launch.cpus))
            elif self.pool.started:
                logger.info("worker %s starts on CPUs %s", worker.worker_id, cpus)
        for worker_id in change.retire:
            if only is not None and by_id[worker_id].model_key not in only:
                continue
            logger.info("worker %s retires (finishes its work first)", worker_id)
            self.retire(by_id[worker_id])
        return started

    def retire(self, worker: WorkerProcess) -> None:
        self.pool.retire(worker)
        self.track(self._forget_when_gone(worker))

    def retire_model(self, model: ServedModel) -> list[WorkerProcess]:
        workers = [w for w in model.workers if not w.retiring]
        for worker in workers:
            self.retire(worker)
        return list(model.workers)

    def _new_worker(self, model: ServedModel, launch: InstanceLaunch) -> WorkerProcess:
        number = next(self._numbers.setdefault(model.key, itertools.count()))
        worker_id = f"{model.name}-{model.version}-{number}"
        argv = launch.argv + ["--model-dir", str(model.model_dir),
                              "--model-name", model.name, "--batch-size", str(model.settings.batch_size),
                              "--worker-id", worker_id]
        argv += ["--optimization", json.dumps(model.settings.optimization.to_dict())]  # the server decides
        argv += ["--handler", model.handler or model.manifest.handler]
        streams = min(model.settings.streams, len(launch.cpus))  # a stream needs a core of its own
        if streams > 1:
            argv += ["--streams", str(streams)]
        spec = WorkerSpec(worker_id, model.key, launch, argv, model.settings.response_timeout_s,
                          max_load_failures=self.max_load_failures, streams=streams,
                          batches_ahead=1 if self.batch_ahead and streams == 1 else 0)
        worker = WorkerProcess(spec, model.queue)
        if model.metrics is not None:
            worker.on_batch_done = functools.partial(model.metrics.batch_done, worker=worker_id)
        model.workers.append(worker)
        self.pool.add(worker)
        return worker

    async def _replace_when_ready(self, new: WorkerProcess, old: WorkerProcess) -> None:
        while not new.retiring:
            await new.loaded.wait()
            if new.ready:
                break
            new.loaded.clear()  # it failed to load and will be restarted: keep the old one serving
        if not new.retiring:  # (a later change retired the successor: the old one's fate is that change's)
            self.retire(old)

    async def _forget_when_gone(self, worker: WorkerProcess) -> None:
        await worker.exited.wait()
        for model in self.registry.all() + list(self.registry.removed):
            if worker in model.workers:
                model.workers.remove(worker)

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def track(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def wait_loaded(workers: list[WorkerProcess], timeout: float) -> list[str]:
    """Wait until each worker is ready or has failed to load once; returns the failures."""
    if workers:
        try:
            await asyncio.wait_for(asyncio.gather(*(w.loaded.wait() for w in workers)), timeout)
        except asyncio.TimeoutError:
            pass
    failures = []
    for worker in workers:
        if not worker.ready and not worker.retiring:
            failures.append(f"{worker.worker_id}: {worker.last_error or 'not ready within the timeout'}")
    return failures
