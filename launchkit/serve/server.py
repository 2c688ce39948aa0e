"""`launchkit serve`: load archives, plan and start workers, serve three APIs until told to stop.

* inference (default 127.0.0.1:8080): /predictions and KServe v2, see :mod:`.api.inference`;
* management (127.0.0.1:8081): register, scale, describe, unregister, see :mod:`.api.management`;
* metrics (127.0.0.1:8082): Prometheus text, see :mod:`.api.metrics`.

Management and metrics stay on loopback unless told otherwise; management beyond loopback needs a
token (refusing to start without one). Shutdown (SIGINT/SIGTERM): stop accepting, let requests
in flight finish (bounded by ``--graceful-timeout``), stop the workers, exit 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launchkit.core import eventloop
from launchkit.launch.env import wait_policy_in
from launchkit.serve.api.http import ForegroundServer, bind, http_protocol
from launchkit.serve.api.inference import InferenceApp
from launchkit.serve.api.management import ManagementApp
from launchkit.serve.api.metrics import ServerMetrics
from launchkit.serve.fleet.fleet import Fleet, base_run_request, cores_used
from launchkit.serve.fleet.forkserver import ForkServers
from launchkit.serve.fleet.pool import WorkerPool
from launchkit.serve.loading import attach_metrics, load_models
from launchkit.serve.scheduling.registry import Registry
from launchkit.serve.limits import Limits
from launchkit.serve.settings import ModelOverrides, ModelSource, ServerConfig, grpc_target

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeRequest:
    config: ServerConfig  # settled: see launchkit.serve.settings.server_config
    sources: tuple[ModelSource, ...]
    overrides: ModelOverrides = ModelOverrides()  # the command line's per-model settings
    graceful_timeout_s: float = 30.0
    topology_root: str | None = None


def startup_report(config: ServerConfig, registry: Registry, fleet: Fleet,
                   open_files: tuple[int, int] | None = None) -> str:
    lines = ["effective configuration " + json.dumps(config.effective(), sort_keys=True)]
    for model in registry.all():
        settings = model.settings
        lines.append(f"  model {model.name} v{model.version} ({model.archive}): batch_size={settings.batch_size} "
                     f"max_batch_delay={settings.max_batch_delay_ms:g}ms workers={settings.workers} "
                     f"job_queue_size={settings.job_queue_size} response_timeout={settings.response_timeout_s:g}s"
                     + (f" streams={settings.streams}" if settings.streams > 1 else ""))
        for worker in model.workers:
            lines.append(f"    worker {worker.worker_id}: CPUs {','.join(map(str, worker.launch.cpus))} "
                         f"threads={worker.launch.threads} memory nodes={list(worker.launch.mem_nodes) or 'unbound'}"
                         + (f" streams={worker.streams}" if worker.streams > 1 else ""))
    plan = fleet.last_plan
    if plan is not None:
        runtime = plan.runtime
        lines.append(f"  workers: allocator {runtime.allocator}, OpenMP {runtime.omp_runtime}, memory binding: "
                     f"{plan.memory_binding}")
    for model in registry.all():
        if cores_used(model, fleet.run_request.cpu) == 1:
            lines.append(f"  {model.name}: each worker on one core, one thread (a model under 1 MiB at batch size 1: "
                         "threads cost its short calls more than they gain; --cpu-launcher-args "
                         "'--ncores-per-instance N' gives N)")
            continue
        env = model.workers[0].launch.env if model.workers else {}
        words = {"passive": "sleep at once", "brief": "spin briefly, then sleep", "spin": "spin"}
        lines.append(f"  {model.name}: OpenMP threads {words[wait_policy_in(env)]} between operators (--omp-wait)")
    limits = config.limits
    lines.append(f"  limits: headers {limits.max_header_bytes} bytes / {limits.max_headers}, head within "
                 f"{limits.header_timeout_s:g} s, body within {limits.body_timeout_s:g} s, idle {limits.keep_alive_timeout_s:g}"
                 f" s, {limits.max_connections} connections per listener"
                 + (f" (open files {open_files[0]})" if open_files else "")
                 + f", body {config.max_request_size} bytes, {limits.max_tensor_elements} tensor values, archives "
                 f"{limits.max_archive_bytes >> 30} GiB / {limits.max_archive_entries} entries / "
                 f"{limits.max_archive_ratio:g}:1")
    if config.grpc_inference_address is not None:
        lines.append(f"  gRPC inference (Open Inference Protocol, TorchServe's inference.proto) on "
                     f"{grpc_target(config.grpc_inference_address)}")
    if config.grpc_management_address is not None:
        lines.append(f"  gRPC management (TorchServe's management.proto) on {grpc_target(config.grpc_management_address)}")
    if config.grpc_inference_address is not None or config.grpc_management_address is not None:
        lines.append(f"  gRPC served by {config.grpc_processes} relay process{'es' if config.grpc_processes != 1 else ''}"
                     if config.grpc_processes else "  gRPC served on the frontend's event loop (grpc_processes=0)")
    lines.append(f"  management API on {config.management_address}"
                 f"{' (token required)' if config.management_token else ''}; "
                 + (f"metrics on {config.metrics_address}/metrics" if config.enable_metrics_api else "metrics off"))
    plan_warnings = list(plan.warnings) if plan is not None else []
    for message in list(config.warnings) + list(fleet.warnings) + plan_warnings:
        lines.append(f"  warning: {message}")
    for message in config.notes:
        lines.append(f"  note: {message}")
    return "\n".join(lines)


def run_server(request: ServeRequest) -> int:
    with eventloop.runner() as runner:
        return runner.run(_serve(request))


def raise_open_files_limit(wanted: int) -> tuple[int, int]:
    """Raise the soft limit on open files toward ``wanted`` (up to the hard limit): (soft, hard) after.

    Each connection is a file descriptor; at the usual soft limit of 1,024, a thousand idle
    connections locked out every listener. Raising the soft limit up to the hard one needs no
    privilege."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft, hard


async def _serve(request: ServeRequest) -> int:
    config = request.config
    limits = config.limits
    # three listeners' connections, the workers' sockets and the model files, with room to spare
    open_files = raise_open_files_limit(3 * limits.max_connections + 1024)
    workdir = Path(tempfile.mkdtemp(prefix="launchkit-serve-"))
    os.chmod(workdir, 0o700)
    pool: WorkerPool | None = None
    fleet: Fleet | None = None
    loop = asyncio.get_running_loop()
    stop_requested = []
    grpc_servers: list[Any] = []
    grpc_stopping: list[asyncio.Future[None]] = []
    try:
        registry = load_models(config, request.sources, request.overrides, workdir)
        metrics = ServerMetrics(registry) if config.enable_metrics_api else None
        if metrics is not None:
            for model in registry.all():
                attach_metrics(model, metrics)
        run_request, warnings = base_run_request(config, request.topology_root)
        if config.grpc_inference_address is not None or config.grpc_management_address is not None:
            # before the fork server starts: importing it sets gRPC's fork setting in the environment, and
            # the fork server only forks workers whose environment is its own
            import launchkit.serve.api.grpc_server  # noqa: F401
        pool = WorkerPool([], ForkServers() if config.fork_workers else None)
        fleet = Fleet(registry, pool, run_request, warnings, config.max_load_failures,
                      share_cores=config.allow_shared_cores or config.cpu_launcher_enable is False,
                      batch_ahead=config.batch_ahead)
        fleet.apply()
        inference = InferenceApp(registry, config.max_request_size, config.max_response_size, metrics,
                                 config.inference_token, limits.max_tensor_elements)
        listeners: list[tuple[Any, Any]] = [(inference, bind(config.inference_address))]
        management = ManagementApp(registry, fleet, config, workdir, metrics)
        listeners.append((management, bind(config.management_address, "management_address", "--management-address")))
        if metrics is not None:
            listeners.append((metrics.asgi_app(), bind(config.metrics_address, "metrics_address", "--metrics-address")))
        logger.info("%s", startup_report(config, registry, fleet, open_files))
        await pool.start()
        grpc_servers = await _grpc_servers(config, registry, inference, management, workdir)
        servers = [(_http_server(app, request.graceful_timeout_s, config.limits), sock) for app, sock in listeners]
        def request_exit() -> None:
            stop_requested.append(loop.time())
            inference.shutting_down = True
            if len(stop_requested) == 1:
                logger.info("stop signal: finishing the requests in flight (at most %g s); a second signal stops "
                            "at once", request.graceful_timeout_s)
            elif len(stop_requested) == 2:
                logger.warning("second stop signal: stopping now, without waiting for requests in flight")
            for server, _ in servers:
                server.request_exit()  # the second call makes uvicorn stop at once
            grace = request.graceful_timeout_s if len(stop_requested) == 1 else 0  # a second signal: none
            grpc_stopping.extend(asyncio.ensure_future(server.stop(grace)) for server in grpc_servers)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, request_exit)
        ready_task = asyncio.ensure_future(_announce_ready(registry, config))
        await asyncio.gather(*(server.serve(sockets=[sock]) for server, sock in servers))
        ready_task.cancel()
        await asyncio.gather(*(grpc_stopping or [server.stop(0) for server in grpc_servers]))
        logger.info("stopped accepting; stopping workers")
        return 0
    finally:
        if fleet is not None:
            fleet.close()
        if pool is not None:
            # Idle workers exit at once. A worker still busy once the graceful period is over runs
            # a request nobody waits for any more: it gets what is left of the period, at least 1 s.
            left = request.graceful_timeout_s - (loop.time() - stop_requested[0]) if stop_requested else 10.0
            await pool.stop(timeout=0.2 if len(stop_requested) > 1 else max(left, 1.0))
        shutil.rmtree(workdir, ignore_errors=True)


async def _grpc_servers(config: ServerConfig, registry: Registry, inference: InferenceApp,
                        management: ManagementApp, workdir: Path) -> list[Any]:
    """gRPC: the Open Inference Protocol and TorchServe's inference API on one address (answered by the
    inference app's code), TorchServe's management API on another (answered by the management app);
    served by relay processes (:mod:`.api.grpc_bridge`), or with ``grpc_processes=0`` on this loop."""
    if config.grpc_inference_address is None and config.grpc_management_address is None:
        return []  # grpc is not even imported
    from launchkit.serve.api.grpc_bridge import GrpcRelays, RelayedServer
    from launchkit.serve.api.grpc_inference import GrpcInferenceService
    from launchkit.serve.api.grpc_server import Service, start_grpc_server
    from launchkit.serve.api.grpc_torchserve import TorchServeInference, TorchServeManagement

    listeners: list[RelayedServer] = []
    if config.grpc_inference_address is not None:
        services: tuple[Service, ...] = (
            GrpcInferenceService(registry, inference.kserve, config.inference_token).service(),
            TorchServeInference(registry, config.max_response_size, config.inference_token).service())
        listeners.append(RelayedServer(grpc_target(config.grpc_inference_address), "grpc_inference_address",
                                       "--grpc-address", services))
    if config.grpc_management_address is not None:
        # the management app checks Host against its own address (DNS rebinding): its own address it is
        services = (TorchServeManagement(management, grpc_target(config.management_address)).service(),)
        listeners.append(RelayedServer(grpc_target(config.grpc_management_address), "grpc_management_address",
                                       "--grpc-management-address", services))
    if config.grpc_processes:
        relays = GrpcRelays(listeners, config.grpc_processes, workdir, config.max_request_size,
                            config.max_response_size)
        try:
            await relays.start()
        except BaseException:
            await relays.stop(0)
            raise
        return [relays]
    return [await start_grpc_server(list(listener.services), listener.target, listener.key, listener.flag,
                                    config.max_request_size, config.max_response_size) for listener in listeners]


def _http_server(app: Any, graceful_timeout_s: float, limits: Limits) -> Any:
    import uvicorn

    config = uvicorn.Config(app, http=http_protocol(limits), lifespan="off", log_level="warning", access_log=False,
                            # uvicorn's hints say int; it takes fractions of a second as well
                            timeout_graceful_shutdown=graceful_timeout_s,  # type: ignore[arg-type]
                            limit_concurrency=limits.max_connections,
                            timeout_keep_alive=limits.keep_alive_timeout_s,  # type: ignore[arg-type]
                            backlog=2048)
    return ForegroundServer(config)


async def _announce_ready(registry: Registry, config: ServerConfig) -> None:
    failed: set[str] = set()
    while not registry.all_ready():
        for key, reason in registry.failures().items():
            if key not in failed:
                failed.add(key)
                logger.error("model %s is marked failed: %s (still retried; /ping answers Unhealthy)", key, reason)
        await asyncio.sleep(0.05)
    names = ", ".join(f"{m.name}" for m in registry.all()) or "no model yet: register one with POST /models"
    logger.info("ready on %s (%s); management on %s", config.inference_address, names, config.management_address)
