"""Prometheus metrics of the server, served on ``metrics_address`` /metrics (prometheus_client).

What is counted lives below, in serve/scheduling/model_metrics.py (one ModelMetrics per model
version, kept cheap on the request path); this module is the Prometheus side: collectors that
read those counters and histograms at scrape time, and states rather than events (workers by
state, restarts, queue depth, worker memory) read when scraped. prometheus_client does the
registry, the text format and ``?name[]=`` filtering.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, make_asgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from launchkit.core.errors import LaunchkitError
from launchkit.serve.api.responses import send_json, torchserve_error
from launchkit.serve.api.routes import METRICS_ROUTES, Router
from launchkit.serve.api.ts_metrics import TorchServeCollector
from launchkit.serve.fleet.state import WorkerState
from launchkit.serve.scheduling.model_metrics import ModelMetrics
from launchkit.serve.scheduling.registry import Registry, ServedModel

METRICS_ROUTER = Router(METRICS_ROUTES)


class ServerMetrics:
    def __init__(self, models: Registry) -> None:
        self.models = models
        self.registry = CollectorRegistry()
        self.unknown = ModelMetrics("", "")  # requests for models that are not loaded (404)
        self.registry.register(EventCollector(self))
        self.registry.register(StateCollector(models))
        self.torchserve = TorchServeCollector(models, self.unknown)
        self.registry.register(self.torchserve)

    def for_model(self, model: ServedModel) -> ModelMetrics:
        return ModelMetrics(model.name, model.version)

    def unknown_model(self, status: int) -> None:
        self.unknown.by_code[status] = self.unknown.by_code.get(status, 0) + 1

    def asgi_app(self) -> Any:
        inner = make_asgi_app(self.registry)

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            try:
                route, _ = METRICS_ROUTER.match(scope["method"], scope["path"])
            except LaunchkitError as error:
                status, body, headers = torchserve_error(error)
                await send_json(send, status, body, headers=headers)
                return
            if route.operation == "api_description":
                from launchkit.serve.api.openapi import document

                await send_json(send, 200, document("metrics"))
                return
            accept = next((value for name, value in scope["headers"] if name == b"accept"), b"")
            if b"application/openmetrics-text" in accept:  # TorchServe has no OpenMetrics form to match
                await inner(scope, receive, send)
                return
            names = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("name[]")
            registry = self.registry.restricted_registry(names) if names else self.registry
            body = generate_latest(registry) + self.torchserve.host_counters(names)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode()),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        return app


class EventCollector(Collector):
    """Requests by status and the histograms, per model version."""

    def __init__(self, server: ServerMetrics) -> None:
        self.server = server

    @staticmethod
    def _families() -> dict[str, Any]:
        labels = ["model", "version"]
        return {
            "requests": CounterMetricFamily("launchkit_requests", "Inference requests answered, by model and HTTP "
                                            "status", labels=labels + ["code"]),
            "latency": HistogramMetricFamily("launchkit_request_latency_seconds", "Time from a request's arrival to "
                                             "its response, in the server", labels=labels),
            "queue_wait": HistogramMetricFamily("launchkit_queue_wait_seconds", "Time a request waited in its "
                                                "model's queue before its batch went to a worker", labels=labels),
            "batch_size": HistogramMetricFamily("launchkit_batch_size", "Requests per batch sent to a worker",
                                                labels=labels),
            "handler": HistogramMetricFamily("launchkit_handler_seconds", "Handler time per batch: preprocess, "
                                             "inference, postprocess (BaseHandler subclasses), and handle (the "
                                             "whole call, every handler)", labels=labels + ["stage"]),
            "streams": CounterMetricFamily("launchkit_stream_batches", "Batches run by each stream of multi-stream "
                                           "workers", labels=labels + ["worker", "stream"]),
        }

    def describe(self) -> Iterator[Any]:
        yield from self._families().values()

    def collect(self) -> Iterator[Any]:
        families = self._families()
        models = [model.metrics for model in self.server.models.all() if model.metrics is not None]
        for metrics in [self.server.unknown, *models]:
            for code, count in sorted(metrics.by_code.items()):
                families["requests"].add_metric(metrics.labels + [str(code)], count)
        for metrics in models:
            for key in ("latency", "queue_wait", "batch_size"):
                buckets, total = getattr(metrics, key).buckets()
                families[key].add_metric(metrics.labels, buckets, total)
            for stage, histogram in metrics.stages.items():
                buckets, total = histogram.buckets()
                if buckets[-1][1]:
                    families["handler"].add_metric(metrics.labels + [stage], buckets, total)
            for (worker, stream), count in sorted(metrics.totals.stream_batches.items()):
                families["streams"].add_metric(metrics.labels + [worker, str(stream)], count)
        yield from families.values()


class StateCollector(Collector):
    """Worker states, restarts, queue depth and worker memory, read at scrape time."""

    def __init__(self, models: Registry) -> None:
        self.models = models

    @staticmethod
    def _families() -> tuple[Any, ...]:
        return (
            GaugeMetricFamily("launchkit_workers", "Workers by state", labels=["model", "version", "state"]),
            CounterMetricFamily("launchkit_worker_restarts", "Worker restarts after a crash or timeout",
                                labels=["model", "version"]),
            GaugeMetricFamily("launchkit_queue_depth", "Requests waiting for a worker", labels=["model", "version"]),
            GaugeMetricFamily("launchkit_model_ready", "1 when the model has a worker ready",
                              labels=["model", "version"]),
            GaugeMetricFamily("launchkit_worker_rss_bytes", "Resident memory of each worker process",
                              labels=["model", "version", "worker"]),
        )

    def describe(self) -> Iterator[Any]:
        """The families without samples: lets ``/metrics?name[]=...`` find them."""
        yield from self._families()

    def collect(self) -> Iterator[Any]:
        import psutil

        workers, restarts, depth, ready, memory = self._families()
        for model in self.models.all():
            labels = [model.name, model.version]
            states: dict[WorkerState, int] = {}
            for worker in model.workers:
                states[worker.state] = states.get(worker.state, 0) + 1
                if worker.pid and worker.state.alive:
                    try:
                        memory.add_metric(labels + [worker.worker_id], psutil.Process(worker.pid).memory_info().rss)
                    except psutil.Error:
                        pass
            for state in WorkerState:
                workers.add_metric(labels + [state.value], states.get(state, 0))
            restarts.add_metric(labels, sum(worker.restarts for worker in model.workers))
            depth.add_metric(labels, len(model.queue.queue))
            ready.add_metric(labels, 1 if model.ready else 0)
        yield from (workers, restarts, depth, ready, memory)
