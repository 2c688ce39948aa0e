"""`launchkit serve`: load archives, plan and start workers, serve HTTP until told to stop.

HTTP stack: uvicorn with its httptools parser on uvloop, driving a bare ASGI app. Chosen by
measurement on the 2-core development machine (see README, "Serving"): a bare uvicorn/httptools
echo answers about 14k req/s there against aiohttp's 13k, and a framework layer on top (Starlette,
FastAPI) costs per request what this server exists to save.

Shutdown (SIGINT/SIGTERM): stop accepting, let requests in flight finish (bounded by
``--graceful-timeout``), stop the workers, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from launchkit.errors import LaunchkitError, PlanError, UsageError
from launchkit.launch.launcher import plan_run
from launchkit.launch.options import parse_launcher_args
from launchkit.launch.runplan import ProgramSpec
from launchkit.serve.app import InferenceApp
from launchkit.serve.archive import ArchiveError, extract_archive, read_manifest, read_model_config
from launchkit.serve.batcher import ModelQueue
from launchkit.serve.config import Address, ModelSettings, ModelSource, ServerConfig
from launchkit.serve.registry import Registry, ServedModel
from launchkit.serve.workers import WorkerPool, WorkerProcess


@dataclass(frozen=True)
class SettingOverrides:
    """Per-model settings given on the command line; they beat config files and archives."""

    batch_size: int | None = None
    max_batch_delay_ms: float | None = None
    workers: int | None = None

    def apply(self, settings: ModelSettings) -> ModelSettings:
        changes = {k: v for k, v in (("batch_size", self.batch_size), ("max_batch_delay_ms", self.max_batch_delay_ms),
                                     ("workers", self.workers)) if v is not None}
        return replace(settings, **changes)


@dataclass(frozen=True)
class ServeRequest:
    config: ServerConfig
    sources: tuple[ModelSource, ...]
    overrides: SettingOverrides = SettingOverrides()
    graceful_timeout_s: float = 30.0
    topology_root: str | None = None


class ServeError(LaunchkitError):
    exit_code = 1


def resolve_sources(config: ServerConfig, paths: list[str], models: list[str]) -> list[ModelSource]:
    """Archives from MODEL arguments, --models (or load_models), relative to the model store."""
    sources = [ModelSource(Path(path)) for path in paths]
    specs = models or list(config.load_models)
    store = config.model_store
    for spec in specs:
        name, _, file = spec.rpartition("=") if "=" in spec else ("", "", spec)
        if file == "all":
            if store is None:
                raise UsageError("--models all needs --model-store (or model_store= in config.properties)")
            sources += [ModelSource(path) for path in sorted(store.glob("*.mar"))]
            continue
        path = Path(file)
        if not path.is_absolute() and store is not None and not path.exists():
            path = store / file
        sources.append(ModelSource(path, name or None))
    return sources


def load_models(request: ServeRequest, workdir: Path) -> Registry:
    registry = Registry()
    for index, source in enumerate(request.sources):
        try:
            model_dir = extract_archive(source.path, workdir / f"model-{index}")
            manifest = read_manifest(model_dir)
            archive_config = read_model_config(model_dir, manifest)
        except ArchiveError as error:
            raise ServeError(f"cannot load {source.path}: {error}") from None
        name = source.name or manifest.model_name
        settings = request.overrides.apply(request.config.model_settings(name, manifest.version, archive_config))
        queue = ModelQueue(name, settings.batch_size, settings.max_batch_delay_ms, settings.job_queue_size)
        try:
            registry.add(ServedModel(name, manifest.version, model_dir, source.path, manifest, settings, queue))
        except ValueError as error:
            raise UsageError(str(error)) from None
    if not registry.models:
        raise UsageError("no model to serve: give MODEL.mar paths, --models, or load_models= in --ts-config")
    return registry


def plan_workers(request: ServeRequest, registry: Registry, socket_path: str) -> tuple[list[WorkerProcess], Any]:
    """One launch plan for every worker of every model, so no two workers share a core."""
    models = registry.all()
    total = sum(model.settings.workers for model in models)
    program = ProgramSpec("launchkit.serve.worker", module=True)
    args = shlex.split(request.config.cpu_launcher_args)
    # Workers default to GNU OpenMP (the runtime pip's torch links) with passive waiting: a worker
    # idles between batches while the frontend needs the CPU; measured in the README ("Serving").
    run_request = parse_launcher_args(["--omp-runtime", "gnu", *args], program)
    warnings = []
    if run_request.cpu.ninstances not in (None, total) or run_request.cpu.instance_indices is not None:
        warnings.append(f"cpu_launcher_args --ninstances/--rank ignored: the server runs {total} worker(s), "
                        "one launcher instance each")
    cpu = replace(run_request.cpu, ninstances=total, instance_indices=None, latency_mode=False, throughput_mode=False)
    if request.config.cpu_launcher_enable is False:
        run_request = replace(run_request, binding=replace(run_request.binding, cpu_affinity=False, numactl=False))
        warnings.append("cpu_launcher_enable=false: workers are not pinned (their thread counts are still split)")
    run_request = replace(run_request, cpu=cpu, topology_root=request.topology_root)
    waits = {model.name: wait_policy(model, run_request.omp_wait) for model in models}
    try:
        # One plan per wait policy in use: the CPU split is the same in each (same inputs), only
        # the OpenMP variables differ, and each worker takes its instance from its model's plan.
        plans = {wait: plan_run(replace(run_request, omp_wait=wait))[1] for wait in sorted(set(waits.values()))}
    except PlanError as error:
        counts = ", ".join(f"{model.name}: {model.settings.workers}" for model in models)
        raise PlanError(
            f"cannot give {total} worker(s) ({counts}) their own cores: {error} "
            "For the server: lower --workers (or minWorkers / default_workers_per_model), or serve fewer models."
        ) from None
    plan = next(iter(plans.values()))
    workers = []
    index = 0
    for model in models:
        for number in range(model.settings.workers):
            launch = plans[waits[model.name]].instances[index]
            index += 1
            worker_id = f"{model.name}-{model.version}-{number}"
            argv = launch.argv + ["--socket", socket_path, "--model-dir", str(model.model_dir),
                                  "--model-name", model.name, "--batch-size", str(model.settings.batch_size),
                                  "--worker-id", worker_id]
            worker = WorkerProcess(worker_id, f"{model.name}/{model.version}", model.queue, launch, argv,
                                   model.settings.response_timeout_s)
            model.workers.append(worker)
            workers.append(worker)
    return workers, replace(plan, warnings=plan.warnings + tuple(warnings))


SPIN_MODEL_BYTES = 8 * 2**20


def wait_policy(model: ServedModel, requested: str) -> str:
    """How a model's OpenMP threads wait between parallel regions.

    ``--omp-wait spin|passive`` decides for every model. ``auto``: a model whose weights are
    over 8 MiB computes for milliseconds per request, and sleeping threads would pay a wake-up per
    operator (resnet18: 0.90 of in-process throughput passive, 0.97 spinning); a small model is
    done in microseconds, and threads spinning after it steal the CPU the frontend needs
    (tiny: 2.6k req/s spinning, 6.3k+ passive). Measured on the 2-core machine, see the README.
    """
    if requested != "auto":
        return requested
    files = [model.model_dir / model.manifest.serialized_file] if model.manifest.serialized_file else []
    size = sum(path.stat().st_size for path in files if path.is_file())
    return "spin" if size > SPIN_MODEL_BYTES else "passive"


def bind(address: Address) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address.host, address.port))
    except OSError as error:
        sock.close()
        raise ServeError(f"cannot listen on {address}: {error.strerror}. Is another server running there? "
                         "Pick another port with --inference-address (or inference_address= in --ts-config).") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def startup_report(request: ServeRequest, registry: Registry, plan: Any) -> str:
    lines = ["launchkit serve: effective configuration " + json.dumps(request.config.effective(), sort_keys=True)]
    for model in registry.all():
        settings = model.settings
        lines.append(f"  model {model.name} v{model.version} ({model.archive}): batch_size={settings.batch_size} "
                     f"max_batch_delay={settings.max_batch_delay_ms:g}ms workers={settings.workers} "
                     f"job_queue_size={settings.job_queue_size} response_timeout={settings.response_timeout_s:g}s")
        for worker in model.workers:
            lines.append(f"    worker {worker.worker_id}: CPUs {','.join(map(str, worker.launch.cpus))} "
                         f"threads={worker.launch.threads} memory nodes={list(worker.launch.mem_nodes) or 'unbound'}")
    runtime = plan.runtime
    lines.append(f"  workers: allocator {runtime.allocator}, OpenMP {runtime.omp_runtime}, memory binding: "
                 f"{plan.memory_binding}")
    for model in registry.all():
        env = model.workers[0].launch.env if model.workers else {}
        passive = env.get("OMP_WAIT_POLICY") == "PASSIVE" or env.get("KMP_BLOCKTIME") == "0"
        lines.append(f"  {model.name}: OpenMP threads {'sleep at once' if passive else 'spin briefly'} between "
                     "operators (--omp-wait)")
    for message in list(request.config.warnings) + list(plan.warnings):
        lines.append(f"  warning: {message}")
    for message in request.config.notes:
        lines.append(f"  note: {message}")
    return "\n".join(lines)


def run_server(request: ServeRequest) -> int:
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        return runner.run(_serve(request))


async def _serve(request: ServeRequest) -> int:
    import uvicorn

    workdir = Path(tempfile.mkdtemp(prefix="launchkit-serve-"))
    os.chmod(workdir, 0o700)
    pool: WorkerPool | None = None
    try:
        registry = load_models(request, workdir)
        socket_path = str(workdir / "workers.sock")
        workers, plan = plan_workers(request, registry, socket_path)
        listener = bind(request.config.inference_address)
        print(startup_report(request, registry, plan), file=sys.stderr, flush=True)
        pool = WorkerPool(socket_path, workers)
        await pool.start()
        app = InferenceApp(registry, request.config.max_request_size, request.config.max_response_size)
        config = uvicorn.Config(app, http=_keep_alive_protocol(), lifespan="off", log_level="warning", access_log=False,
                                timeout_graceful_shutdown=int(request.graceful_timeout_s) or None,
                                limit_concurrency=None, backlog=2048)
        server = _ForegroundServer(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.request_exit)
        ready_task = asyncio.ensure_future(_announce_ready(registry, request.config.inference_address))
        await server.serve(sockets=[listener])
        ready_task.cancel()
        print("launchkit serve: stopped accepting; stopping workers", file=sys.stderr, flush=True)
        return 0
    finally:
        if pool is not None:
            await pool.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def _announce_ready(registry: Registry, address: Address) -> None:
    while not registry.all_ready():
        await asyncio.sleep(0.05)
    names = ", ".join(f"{m.name}" for m in registry.all())
    print(f"launchkit serve: ready on {address} ({names})", file=sys.stderr, flush=True)


def _keep_alive_protocol() -> type:
    """uvicorn's httptools protocol, also keeping HTTP/1.0 connections that ask for keep-alive.

    uvicorn closes every HTTP/1.0 connection, even with ``Connection: keep-alive``. ab -k (the
    tool TorchServe's benchmarks use) speaks exactly that, so each request paid a new TCP
    connection: about 30% of the frontend's time per request went to connection set-up. The app
    answers such requests with ``Connection: keep-alive`` and a content-length.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class KeepAliveHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(_CoalescingTransport(transport))

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            cycle = getattr(self, "cycle", None)
            if cycle is not None and self.parser.get_http_version() == "1.0" and self.parser.should_keep_alive():
                cycle.keep_alive = True

    return KeepAliveHttpToolsProtocol


class _CoalescingTransport:
    """Joins uvicorn's two writes per response (head, then body) into one send.

    uvicorn writes the status line and headers, then the body, as separate writes; on uvloop each
    is its own send() and TCP segment, so a small response cost two syscalls here and two wake-ups
    at the client. The head is held until the body follows (in the same turn of the event loop,
    or flushed at the end of it).
    """

    __slots__ = ("_transport", "_pending", "_loop")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._pending: bytes | None = None
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if self._pending is None:
            if data.endswith(b"\r\n\r\n"):  # a head: wait for its body
                self._pending = data
                self._loop.call_soon(self.flush)
            else:
                self._transport.write(data)
            return
        pending, self._pending = self._pending, None
        self._transport.write(pending + data)

    def flush(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._transport.write(pending)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _ForegroundServer:
    """uvicorn's Server with launchkit owning the signals (so workers stop after HTTP drains)."""

    def __new__(cls, config: Any) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):  # noqa: ANN202 - uvicorn's signature
                yield

            def request_exit(self) -> None:
                if self.should_exit:
                    self.force_exit = True
                self.should_exit = True

        return Server(config)
