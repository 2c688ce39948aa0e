"""TorchServe's metric names on ``/metrics``, beside launchkit's own, so dashboards and alerts built
on TorchServe keep working: its frontend counters and the metrics handlers emit.

TorchServe's names, with its labels (its ``metrics.yaml``)::

    ts_inference_requests_total{model_name, model_version, hostname}        counter
    ts_inference_latency_microseconds{model_name, model_version, hostname}  counter (cumulative µs)
    ts_queue_latency_microseconds{model_name, model_version, hostname}      counter (cumulative µs)
    Requests2XX / Requests4XX / Requests5XX{Level="Host", Hostname}         counter (TorchServe's layout)
    HandlerTime / PredictionTime{ModelName, Level="Model", Hostname}        gauge (ms, the last batch)

They are computed when Prometheus scrapes, from sums the server keeps anyway, so serving pays
nothing for them. ``model_version`` is the version that answered (TorchServe writes ``default``
when the URL names none). Handler metrics (``context.metrics.add_time(...)`` and the rest; see
:mod:`launchkit.serve.worker.metrics_api`) arrive with each batch's results: counters add up,
gauges keep the last value, histograms are exposed as summaries (count and sum).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from launchkit.serve.scheduling.model_metrics import ModelMetrics
from launchkit.serve.scheduling.registry import Registry

HOSTNAME = socket.gethostname()


class TorchServeCollector(Collector):
    def __init__(self, models: Registry, unknown: ModelMetrics) -> None:
        self.models = models
        self.unknown = unknown  # ModelMetrics of requests for models that are not loaded

    def describe(self) -> Iterator[Metric]:
        yield from self._frontend_families()

    @staticmethod
    def _frontend_families() -> list[Metric]:
        return [
            Metric("ts_inference_requests_total", "Inference requests answered (TorchServe's name)", "counter"),
            Metric("ts_inference_latency_microseconds", "Cumulative inference latency in microseconds "
                   "(TorchServe's name)", "counter"),
            Metric("ts_queue_latency_microseconds", "Cumulative queue latency in microseconds (TorchServe's name)",
                   "counter"),
        ]

    def host_counters(self, names: list[str] | None = None) -> bytes:
        """Requests2XX/4XX/5XX in TorchServe's own layout, which prometheus_client cannot write.

        TorchServe (Java simpleclient) writes ``# TYPE Requests2XX counter`` and
        ``Requests2XX{Level="Host",Hostname="h",} 8.0``: labels in that order, a trailing comma, no
        ``_total``. prometheus_client sorts labels and names counter families ``*_total``, so checks
        that match TorchServe's lines as text (its API test collections do) found nothing.
        """
        groups = {2: 0, 4: 0, 5: 0}
        models = [model.metrics for model in self.models.all() if model.metrics is not None]
        for metrics in [self.unknown, *models]:
            for code, count in metrics.by_code.items():
                if code // 100 in groups:
                    groups[code // 100] += count
        hostname = HOSTNAME.replace("\\", "\\\\").replace('"', '\\"')
        lines = []
        for group, count in groups.items():
            name = f"Requests{group}XX"
            if names and name not in names:
                continue
            lines += [f"# HELP {name} Requests answered with a {group}xx status (TorchServe's name and layout)",
                      f"# TYPE {name} counter", f'{name}{{Level="Host",Hostname="{hostname}",}} {float(count)}']
        return "".join(line + "\n" for line in lines).encode()

    def collect(self) -> Iterator[Metric]:
        requests, latency, queue = self._frontend_families()
        handler_families: dict[str, Metric] = {}  # by name: one family, whatever its dimensions
        derived = {"HandlerTime": Metric("HandlerTime", "Handler time of the last batch in ms (TorchServe's name)",
                                         "gauge"),
                   "PredictionTime": Metric("PredictionTime", "Prediction time of the last batch in ms "
                                            "(TorchServe's name)", "gauge")}
        emitted: set[str] = set()
        for model in self.models.all():
            metrics = model.metrics
            if metrics is None:
                continue
            totals = metrics.totals
            labels = {"model_name": model.name, "model_version": model.version, "hostname": HOSTNAME}
            requests.add_sample("ts_inference_requests_total", labels, float(totals.ok + totals.failed))
            latency.add_sample("ts_inference_latency_microseconds", labels,
                               (totals.ok_seconds + totals.failed_seconds) * 1e6)
            queue.add_sample("ts_queue_latency_microseconds", labels, totals.queue_seconds * 1e6)
            for kind, name, names, unit, samples in metrics.handler_metrics.snapshot():
                emitted.add(name)
                family = handler_families.get(name)
                if family is None:
                    family = Metric(_metric_name(name), f"Handler metric {name} ({unit or 'no unit'})",
                                    "summary" if kind == "histogram" else kind)
                    handler_families[name] = family
                for values, value in samples.items():
                    sample_labels = {**dict(zip(names, values)), "Hostname": HOSTNAME}
                    if isinstance(value, tuple):  # a histogram: count and sum
                        family.add_sample(family.name + "_count", sample_labels, float(value[0]))
                        family.add_sample(family.name + "_sum", sample_labels, float(value[1]))
                    else:
                        family.add_sample(family.name, sample_labels, float(value))
            if totals.batches:
                model_labels = {"ModelName": model.name, "Level": "Model", "Hostname": HOSTNAME}
                for name, family in derived.items():
                    family.add_sample(name, model_labels, round(totals.last_handle_seconds * 1000, 2))
        yield from (requests, latency, queue)
        yield from (family for name, family in derived.items() if name not in emitted and family.samples)
        yield from handler_families.values()


def _metric_name(name: str) -> str:
    """A Prometheus-legal name: TorchServe's handlers may use dots or dashes."""
    cleaned = "".join(ch if ch.isalnum() or ch in "_:" else "_" for ch in name)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"_{cleaned}"
