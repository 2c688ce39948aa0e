"""The management API (TorchServe's, default 127.0.0.1:8081) as a bare ASGI application.

Its routes and their parameters are declared in :mod:`launchkit.serve.api.routes` (``OPTIONS /`` or
``GET /api-description`` answers the OpenAPI document written from them): list, register, describe
(``/models/{name}/all``: every version), scale, unregister after draining, set-default, and ``/ping``,
which never needs a token.

Differences from TorchServe, on purpose: a missing or wrong token is 401 (TorchServe says 400);
``initial_workers`` defaults to the server's workers per model (TorchServe's 0 registers a model
that can only answer 503); ``synchronous`` defaults to true for register (what TorchServe's code
does, whatever its docs say) and false for scale; unknown parameters are a 400, not ignored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from launchkit.core.errors import (
    ArchiveError, BadRequest, Conflict, Forbidden, LaunchkitError, MethodNotAllowed, ModelLoadFailed, NotFound, RequestTimeout,
    Unauthorized,
)
from launchkit.core.values import parse_bool
from launchkit.launch.env import wait_policy_in
from launchkit.model.spec import OptimizationSpec, parse_spec
from launchkit.serve.api.responses import bearer_token_ok, send_json, torchserve_error
from launchkit.serve.api.routes import MANAGEMENT_ROUTES, Param, Router
from launchkit.serve.fleet.fleet import Fleet, wait_loaded
from launchkit.serve.loading import discard_files, open_model
from launchkit.serve.scheduling.model_metrics import KeepsMetrics
from launchkit.serve.scheduling.registry import Registry, ServedModel
from launchkit.serve.addresses import is_loopback
from launchkit.serve.settings import ModelOverrides, ServerConfig
from launchkit.serve.sources import SourceKind, SourcePolicy, fetch, resolve

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 120.0
ROUTER = Router(MANAGEMENT_ROUTES)


class Query:
    """A route's query parameters (declared in :mod:`.routes`) with typed, range-checked access; every
    error names the parameter."""

    def __init__(self, raw: bytes, declared: tuple[Param, ...]) -> None:
        self.declared = {param.name: param for param in declared}
        allowed = set(self.declared)
        try:
            parsed = parse_qs(raw.decode(), keep_blank_values=True, strict_parsing=bool(raw))
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("the query string could not be parsed") from None
        unknown = sorted(set(parsed) - allowed)
        if unknown:
            raise BadRequest(f"unknown parameter(s) {', '.join(unknown)}; this endpoint takes "
                             f"{', '.join(sorted(allowed))}")
        self.values = {key: values[-1] for key, values in parsed.items()}

    def text(self, name: str) -> str | None:
        return self.values.get(name)

    def number(self, name: str) -> Any:
        value = self.values.get(name)
        if value is None or value == "":
            return None
        param = self.declared[name]
        kind, minimum = (int if param.kind == "integer" else float), param.minimum or 0
        try:
            number = kind(value)
        except ValueError:
            raise BadRequest(f"{name}={value!r} is not {'an integer' if kind is int else 'a number'}") from None
        if number < minimum:
            raise BadRequest(f"{name}={value} must be at least {minimum:g}")
        return number

    def flag(self, name: str, default: bool) -> bool:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        return parse_bool(value, name)


class ManagementApp:
    def __init__(self, registry: Registry, fleet: Fleet, config: ServerConfig, workdir: Path,
                 metrics: KeepsMetrics | None = None) -> None:
        self.registry = registry
        self.fleet = fleet
        self.config = config
        self.workdir = workdir
        self.metrics = metrics
        self.policy = SourcePolicy(config.model_store, config.allowed_urls)
        # Bound to loopback, only a browser on this machine reaches it, and only under a loopback name.
        # Bound beyond (a token is then required, which a rebinding page cannot know), any name is fine
        # unless management_allowed_hosts lists them.
        loopback = is_loopback(config.management_address.host)
        self.hosts = ({"localhost", "127.0.0.1", "::1", config.management_address.host.lower()} if loopback else set())
        self.hosts |= set(config.management_allowed_hosts)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            status, payload = await self.answer(scope)
        except LaunchkitError as error:
            status, body, headers = torchserve_error(error)
            await send_json(send, status, body, headers=headers)
            return
        await send_json(send, status, payload)

    def _check_origin(self, scope: dict[str, Any]) -> None:
        """A browser can be made to send requests here: refuse cross-origin ones (CSRF) and foreign Host
        names (DNS rebinding: evil.example resolving to 127.0.0.1 passes the same-origin check)."""
        headers = dict(scope["headers"])
        if b"origin" in headers:
            raise Forbidden("the management API does not answer cross-origin (browser) requests; call it from a "
                            "script or a command line")
        host = headers.get(b"host", b"").decode("latin-1").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if self.hosts and host and name.strip("[]") not in self.hosts:
            raise Forbidden(f"Host {host!r} is not this management API's; add it to management_allowed_hosts "
                            "(config.properties) if a proxy forwards it")

    async def answer(self, scope: dict[str, Any]) -> tuple[int, Any]:
        """The status and JSON payload for a request (an ASGI scope; no body is read: every route takes
        its parameters from the path and the query). Also called by the gRPC management service."""
        method, path = scope["method"], scope["path"]
        self._check_origin(scope)
        token = self.config.management_token
        try:
            route, params = ROUTER.match(method, path)
        except LaunchkitError:
            if token and not bearer_token_ok(scope, token):
                raise Unauthorized("management") from None  # without the token, not even which endpoints exist
            raise
        if route.token and token and not bearer_token_ok(scope, token):
            raise Unauthorized("management")
        query = Query(scope.get("query_string", b""), route.query)
        name, version = params.get("model_name", ""), params.get("model_version")
        match route.operation:
            case "api_description":
                from launchkit.serve.api.openapi import document

                return 200, document("management")
            case "ping":
                return 200, {"status": "Healthy"}
            case "list_models":
                return self._list(query)
            case "register":
                return await self._register(query)
            case "describe" if version == "all":
                return 200, [self._describe(model) for model in self._versions(name)]
            case "describe":
                return 200, [self._describe(self._find(name, version))]
            case "scale":
                return await self._scale(self._find(name, version), query)
            case "unregister":
                return await self._unregister(name, version)
            case "set_default":
                return self._set_default(name, version or "")
        raise AssertionError(f"route {route.operation} has no handler")  # a route table and this match disagree

    # -- reading ---------------------------------------------------------------------------------

    def _find(self, name: str, version: str | None) -> ServedModel:
        return self.registry.find(name, version)

    def _versions(self, name: str) -> list[ServedModel]:
        self._find(name, None)
        return list(self.registry.models[name].values())

    def _list(self, query: Query) -> tuple[int, Any]:
        limit = query.number("limit") or 100
        start = query.number("next_page_token") or 0
        names = sorted(self.registry.models)
        page = names[start:start + limit]
        body: dict[str, Any] = {"models": [{"modelName": name, "modelUrl": self.registry.find(name).url}
                                           for name in page]}
        if start + limit < len(names):
            body["nextPageToken"] = str(start + limit)
        return 200, body

    def _describe(self, model: ServedModel) -> dict[str, Any]:
        settings = model.settings
        ready = [w for w in model.workers if w.ready]
        return {
            "modelName": model.name, "modelVersion": model.version, "modelUrl": model.url, "runtime": "python",
            "handler": model.handler or model.manifest.handler, "default": self.registry.defaults.get(model.name) == model.version,
            "ready": model.ready, "failed": model.failure, "minWorkers": settings.workers,
            "maxWorkers": model.max_workers if model.max_workers is not None else settings.workers,
            "batchSize": settings.batch_size, "maxBatchDelay": settings.max_batch_delay_ms,
            "streams": settings.streams,
            "responseTimeout": settings.response_timeout_s, "loadedAtStartup": model.loaded_at_startup,
            "jobQueueStatus": {"remainingCapacity": max(0, settings.job_queue_size - len(model.queue.queue)),
                               "pendingRequests": len(model.queue.queue)},
            "optimization": ready[0].info.get("optimization") if ready else None,  # the path that runs
            "optimizationRequested": settings.optimization.to_dict(),
            "workers": [_describe_worker(worker) for worker in model.workers],
        }

    # -- changing --------------------------------------------------------------------------------

    async def _register(self, query: Query) -> tuple[int, Any]:
        if not self.config.enable_model_api:
            raise MethodNotAllowed("registering models is disabled (enable_model_api=false)", "GET")
        url = query.text("url")
        if url is None:
            raise BadRequest("url= is required: the name of a .mar in the model store")
        if query.text("runtime") not in (None, "", "python", "python3"):
            raise BadRequest(f"runtime={query.text('runtime')}: only python is supported")
        note = _gpu_note(query)
        synchronous = query.flag("synchronous", True)
        overrides = ModelOverrides(
            batch_size=query.number("batch_size"),
            max_batch_delay_ms=query.number("max_batch_delay"),
            workers=query.number("initial_workers"),
            response_timeout_s=query.number("response_timeout"),
            optimization=_optimization(query.text("optimization")),
            streams=query.number("streams"),
        )
        startup_timeout = query.number("startup_timeout") or STARTUP_TIMEOUT_S
        source = resolve(url, self.policy)
        archive = await asyncio.to_thread(fetch, source, self.policy, self.workdir)
        try:
            model = await asyncio.to_thread(open_model, archive, self.workdir, self.config, (overrides,),
                                            query.text("model_name") or None, query.text("sha256"), url, self.metrics,
                                            query.text("handler") or None)
        except ArchiveError as error:
            raise ArchiveError(f"url={url}: {error}") from None
        finally:
            if source.kind is SourceKind.HTTP:  # downloaded: extracted now, or refused; either way not needed
                archive.unlink(missing_ok=True)
        model.loaded_at_startup = False
        async with self.fleet.lock:
            try:
                self.registry.add(model)
            except Conflict:
                discard_files(model)
                raise
            try:
                started = self.fleet.apply(only={model.key})
            except LaunchkitError:  # a PlanError: the counts do not fit the machine
                self.registry.discard(model)
                discard_files(model)
                raise
            logger.info("registered %s v%s from %s with %d worker(s)", model.name, model.version, url,
                        model.settings.workers)
        what = (f'Model "{model.name}" Version: {model.version} registered with {model.settings.workers} initial '
                f"workers{note}")
        if not synchronous:
            self.fleet.track(self._settle(model, started))
            return 200, {"status": f"{what}. Processing worker updates..."}  # TorchServe: 200 here too
        failures = await wait_loaded(started, startup_timeout)
        if failures:
            await self._remove(model)
            raise ModelLoadFailed(f'model "{model.name}" could not be started and was not registered: '
                                  + "; ".join(failures))
        await self._settle(model, [])
        return 200, {"status": what}

    async def _settle(self, model: ServedModel, started: list[Any]) -> None:
        """Once a new model's workers are up, move the other models' workers to their planned cores."""
        while started and not all(w.ready or w.retiring for w in started):
            await asyncio.gather(*(w.loaded.wait() for w in started))
            for worker in started:
                if not worker.ready:
                    worker.loaded.clear()
        async with self.fleet.lock:
            if self.registry.models.get(model.name, {}).get(model.version) is model:
                self.fleet.apply()

    async def _scale(self, model: ServedModel, query: Query) -> tuple[int, Any]:
        low = query.number("min_worker")
        high = query.number("max_worker")
        low = 1 if low is None else low
        high = low if high is None else high
        if high < low:
            raise BadRequest(f"max_worker={high} is below min_worker={low}")
        timeout = query.number("timeout")
        async with self.fleet.lock:
            previous = model.settings
            model.settings = replace(previous, workers=low)
            try:
                started = self.fleet.apply()
            except LaunchkitError:  # a PlanError: the counts do not fit the machine
                model.settings = previous
                raise
            model.max_workers = high
            logger.info("%s v%s: scaled to %d worker(s)", model.name, model.version, low)
        what = f"Workers scaled to {low} for model: {model.name}, version: {model.version}{_gpu_note(query)}"
        if not query.flag("synchronous", False):
            return 202, {"status": f"Processing worker updates... ({what.lower()} once they are ready)"}
        wait = STARTUP_TIMEOUT_S if timeout is None or timeout < 0 else timeout
        failures = await wait_loaded(started, wait)
        if failures:
            raise ModelLoadFailed(f"{what}, but not all are ready: " + "; ".join(failures))
        return 200, {"status": what}

    async def _unregister(self, name: str, version: str | None) -> tuple[int, Any]:
        if not self.config.enable_model_api:
            raise MethodNotAllowed("unregistering models is disabled (enable_model_api=false)", "GET, PUT")
        model = self._find(name, version)
        drained = await self._remove(model)
        if not drained:
            raise RequestTimeout(f'model "{name}" version {model.version} is unregistered, but its workers are still '
                                 f"finishing after unregister_model_timeout={self.config.unregister_model_timeout_s:g} s")
        return 200, {"status": f'Model "{name}" version {model.version} unregistered'}

    async def _remove(self, model: ServedModel) -> bool:
        """Stop routing to the model, drain and stop its workers, give its cores back; True if drained in time."""
        async with self.fleet.lock:
            self.registry.remove(model.name, model.version)
            logger.info("unregistering %s v%s: draining %d queued request(s)", model.name, model.version,
                        len(model.queue.queue))
            workers = self.fleet.retire_model(model)
            self.fleet.apply()
        try:
            await asyncio.wait_for(asyncio.gather(*(w.exited.wait() for w in workers)),
                                   self.config.unregister_model_timeout_s)
        except asyncio.TimeoutError:
            return False
        if model in self.registry.removed:
            self.registry.removed.remove(model)
        discard_files(model)
        return True

    def _set_default(self, name: str, version: str) -> tuple[int, Any]:
        self.registry.set_default(name, version)
        logger.info("%s: default version is now %s", name, version)
        return 200, {"status": f'Default version of model "{name}" is now "{version}"'}


def _describe_worker(worker: Any) -> dict[str, Any]:
    import psutil

    memory = None
    if worker.pid and worker.state.alive:
        try:
            memory = psutil.Process(worker.pid).memory_info().rss
        except psutil.Error:
            pass
    return {
        "id": worker.worker_id, "pid": worker.pid, "status": worker.state.value.upper(),
        "startTime": datetime.fromtimestamp(worker.started_at or time.time(), timezone.utc).isoformat(),
        "cores": list(worker.launch.cpus), "threads": worker.launch.threads,
        "memoryNodes": list(worker.launch.mem_nodes), "memoryUsage": memory, "restarts": worker.restarts,
        "lastError": worker.last_error, "ompWaitPolicy": wait_policy_in(worker.launch.env),
        "handler": worker.info.get("handler"),
        "streams": worker.info.get("streams") or [{"stream": 0, "cpus": list(worker.launch.cpus)}],
    }


def _optimization(value: str | None) -> OptimizationSpec | None:
    return parse_spec(value, "optimization") if value else None


def _gpu_note(query: Query) -> str:
    """TorchServe's scripts pass number_gpu=; workers here run on CPUs: say it was ignored."""
    gpus = query.number("number_gpu")
    return f" (number_gpu={gpus} ignored: launchkit serves on CPUs)" if gpus else ""



