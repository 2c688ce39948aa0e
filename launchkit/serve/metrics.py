"""Prometheus metrics of the server (prometheus_client), served on ``metrics_address`` /metrics.

Per request the frontend pays a counter increment and a histogram observation (a few
microseconds; measured in the README). Everything that is a state rather than an event (workers
by state, restarts, queue depth, worker memory) is read when Prometheus scrapes, by a collector,
so it costs nothing per request.

Histograms, unlike TorchServe's cumulative-microsecond counters, give percentiles. Buckets run
from 100 µs to 2 min so that a sub-millisecond model and a multi-second one both land in the
middle of the range.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, make_asgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from launchkit.serve.registry import Registry, ServedModel

SECONDS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
STAGES = ("preprocess", "inference", "postprocess", "handle")


class ModelMetrics:
    """The labelled children of one model version, resolved once (labels() is a dict lookup + lock)."""

    def __init__(self, metrics: ServerMetrics, name: str, version: str) -> None:
        self._requests = metrics.requests
        self._labels = (name, version)
        self._by_code: dict[int, Any] = {}
        self.latency = metrics.latency.labels(name, version)
        self.queue_wait = metrics.queue_wait.labels(name, version)
        self.batch_size = metrics.batch_size.labels(name, version)
        self.stages = {stage: metrics.handler.labels(name, version, stage) for stage in STAGES}

    def request_done(self, status: int, seconds: float) -> None:
        counter = self._by_code.get(status)
        if counter is None:
            counter = self._by_code[status] = self._requests.labels(*self._labels, str(status))
        counter.inc()
        self.latency.observe(seconds)

    def batch_sent(self, waits: list[float]) -> None:
        self.batch_size.observe(len(waits))
        for wait in waits:
            self.queue_wait.observe(wait)

    def batch_done(self, timings: dict[str, float]) -> None:
        for stage, seconds in timings.items():
            child = self.stages.get(stage)
            if child is not None:
                child.observe(seconds)


class ServerMetrics:
    def __init__(self, models: Registry) -> None:
        disable_created_metrics()  # *_created series double the output and say nothing here
        self.registry = CollectorRegistry()
        self.requests = Counter("launchkit_requests", "Inference requests answered, by model and HTTP status",
                                ["model", "version", "code"], registry=self.registry)
        self.latency = Histogram("launchkit_request_latency_seconds",
                                 "Time from a request's arrival to its response, in the server",
                                 ["model", "version"], buckets=SECONDS_BUCKETS, registry=self.registry)
        self.queue_wait = Histogram("launchkit_queue_wait_seconds",
                                    "Time a request waited in its model's queue before its batch went to a worker",
                                    ["model", "version"], buckets=SECONDS_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("launchkit_batch_size", "Requests per batch sent to a worker",
                                    ["model", "version"], buckets=BATCH_BUCKETS, registry=self.registry)
        self.handler = Histogram("launchkit_handler_seconds",
                                 "Handler time per batch: preprocess, inference, postprocess (BaseHandler "
                                 "subclasses), and handle (the whole call, every handler)",
                                 ["model", "version", "stage"], buckets=SECONDS_BUCKETS, registry=self.registry)
        self.registry.register(StateCollector(models))
        self._unknown = ModelMetrics(self, "", "")

    def for_model(self, model: ServedModel) -> ModelMetrics:
        return ModelMetrics(self, model.name, model.version)

    def unknown_model(self, status: int) -> None:
        """A request for a model that is not loaded (404): counted, with empty model labels."""
        self._unknown.request_done(status, 0.0)

    def asgi_app(self) -> Any:
        inner = make_asgi_app(self.registry)

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            if scope["path"] != "/metrics" or scope["method"] != "GET":
                body = b'{"code": 404, "type": "ResourceNotFoundException", "message": "metrics are at GET /metrics"}'
                await send({"type": "http.response.start", "status": 404,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
            await inner(scope, receive, send)

        return app


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
            states: dict[str, int] = {}
            for worker in model.workers:
                states[worker.state] = states.get(worker.state, 0) + 1
                if worker.pid and worker.state not in ("stopped", "restarting"):
                    try:
                        memory.add_metric(labels + [worker.worker_id], psutil.Process(worker.pid).memory_info().rss)
                    except psutil.Error:
                        pass
            for state in ("starting", "ready", "busy", "restarting", "retiring"):
                workers.add_metric(labels + [state], states.get(state, 0))
            restarts.add_metric(labels, sum(worker.restarts for worker in model.workers))
            depth.add_metric(labels, len(model.queue.queue))
            ready.add_metric(labels, 1 if model.ready else 0)
        yield from (workers, restarts, depth, ready, memory)
