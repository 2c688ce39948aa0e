"""TorchServe's custom-metrics API for handlers (``context.metrics``), in the worker.

Handlers written for TorchServe call ``context.metrics.add_time(...)``, ``add_counter``,
``add_size``, ``add_percent``, ``add_metric``, ``add_error``, or get a metric object with
``get_metric``/``add_metric_to_cache`` and call its ``add_or_update``/``update``; TorchServe's own
BaseHandler calls ``add_time("HandlerTime", ...)`` on every batch. TorchServe prints each update
to the worker's stdout for the frontend to scrape with a regex; here updates are collected per
batch and travel back with the batch's results, and the server exposes them on ``/metrics`` with
the metric's name and dimensions as labels (plus ``Hostname``): counters add up, gauges keep the
last value, histograms become Prometheus summaries (count and sum).

Dimensions and metric types may be TorchServe's own objects (``ts.metrics.dimension.Dimension``,
``ts.metrics.metric_type_enum.MetricTypes``) or the stand-ins below: anything with ``name`` and
``value`` will do.
"""

from __future__ import annotations

import enum
import logging
from typing import Any

logger = logging.getLogger(__name__)
TIME_UNITS = ("ms", "s")
SIZE_UNITS = ("MB", "kB", "GB", "B")


class MetricTypes(enum.Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


class Dimension:
    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self.value = value

    def __str__(self) -> str:
        return f"{self.name}:{self.value}"

    def to_dict(self) -> dict[str, str]:
        return {"Name": self.name, "Value": self.value}


class MetricsCacheError(Exception):
    """A metric used with the wrong type or unit (TorchServe's MetricsCacheKeyError/ValueError)."""


# (name, unit, type, dimension names, dimension values, value): what travels to the frontend
Update = tuple[str, str, str, tuple[str, ...], tuple[str, ...], float]


class CachedMetric:
    """A metric of the cache; ``add_or_update`` records a value for one set of dimension values."""

    def __init__(self, cache: "HandlerMetricsCache", name: str, unit: str, dimension_names: list[str],
                 metric_type: str) -> None:
        self.cache = cache
        self.metric_name = name
        self.unit = unit
        self.dimension_names = list(dimension_names)
        self.metric_type = metric_type

    def add_or_update(self, value: float, dimension_values: list[str] = (), request_id: str = "") -> None:  # type: ignore[assignment]
        values = [str(v) for v in dimension_values]
        if len(values) != len(self.dimension_names):
            logger.error("metric %s: %d dimension values given for dimensions %s: not recorded", self.metric_name,
                         len(values), self.dimension_names)
            return
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            logger.error("metric %s: value %r is not a number: not recorded", self.metric_name, value)
            return
        if self.metric_type == "counter" and value < 0:
            logger.error("metric %s: a counter cannot decrease (%s): not recorded", self.metric_name, value)
            return
        self.cache.updates.append((self.metric_name, self.unit, self.metric_type, tuple(self.dimension_names),
                                   tuple(values), float(value)))

    def update(self, value: float, request_id: str = "", dimensions: list[Any] = ()) -> None:  # type: ignore[assignment]
        """TorchServe's older form: the dimensions as objects replace the metric's names."""
        self.dimension_names = [d.name for d in dimensions]
        self.add_or_update(value, [d.value for d in dimensions], request_id)


class HandlerMetricsCache:
    """``context.metrics``: TorchServe's MetricCacheAbstract API."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.cache: dict[tuple[str, str], CachedMetric] = {}
        self.request_ids: Any = None
        self.updates: list[Update] = []

    def take_updates(self) -> list[Update]:
        updates, self.updates = self.updates, []
        return updates

    def set_request_ids(self, request_ids: Any) -> None:
        self.request_ids = request_ids

    def _default_dims(self, idx: Any, dimensions: list[Any]) -> list[Any]:
        dims = list(dimensions or [])
        names = {d.name for d in dims}
        if idx is None and self.request_ids is None:
            if "Level" not in names:
                dims.append(Dimension("Level", "Error"))
            return dims
        if "ModelName" not in names:
            dims.append(Dimension("ModelName", self.model_name))
        if "Level" not in names:
            dims.append(Dimension("Level", "Model"))
        return dims

    def _record(self, name: str, value: float, unit: str, idx: Any, dimensions: list[Any], metric_type: Any) -> None:
        dims = self._default_dims(idx if idx is not None else self.request_ids, dimensions)
        metric = self._get_or_add(name, unit, [d.name for d in dims], _type_name(metric_type))
        metric.add_or_update(value, [d.value for d in dims])

    def add_metric(self, name: str, value: float, unit: str, idx: Any = None, dimensions: list[Any] = (),  # type: ignore[assignment]
                   metric_type: Any = MetricTypes.COUNTER) -> None:
        self._record(name, value, unit, idx, dimensions, metric_type)

    def add_counter(self, name: str, value: float, idx: Any = None, dimensions: list[Any] = ()) -> None:  # type: ignore[assignment]
        self._record(name, value, "count", idx, dimensions, MetricTypes.COUNTER)

    def add_time(self, name: str, value: float, idx: Any = None, unit: str = "ms", dimensions: list[Any] = (),  # type: ignore[assignment]
                 metric_type: Any = MetricTypes.GAUGE) -> None:
        if unit not in TIME_UNITS:
            raise MetricsCacheError(f"the unit for a timed metric should be one of {list(TIME_UNITS)}")
        self._record(name, value, unit, idx, dimensions, metric_type)

    def add_size(self, name: str, value: float, idx: Any = None, unit: str = "MB", dimensions: list[Any] = (),  # type: ignore[assignment]
                 metric_type: Any = MetricTypes.GAUGE) -> None:
        if unit not in SIZE_UNITS:
            raise ValueError(f"the unit for a size metric is one of {list(SIZE_UNITS)}")
        self._record(name, value, unit, idx, dimensions, metric_type)

    def add_percent(self, name: str, value: float, idx: Any = None, dimensions: list[Any] = (),  # type: ignore[assignment]
                    metric_type: Any = MetricTypes.GAUGE) -> None:
        self._record(name, value, "percent", idx, dimensions, metric_type)

    def add_error(self, name: str, value: float, dimensions: list[Any] = ()) -> None:  # type: ignore[assignment]
        dims = list(dimensions or [])
        if "Level" not in {d.name for d in dims}:
            dims.append(Dimension("Level", "Error"))
        self._get_or_add(name, "", [d.name for d in dims], "counter").add_or_update(value, [d.value for d in dims])

    def get_metric(self, metric_name: str, metric_type: Any = MetricTypes.COUNTER) -> CachedMetric:
        key = (_type_name(metric_type), metric_name)
        if key not in self.cache:
            raise KeyError(f"metric {metric_name!r} of type {key[0]} is not in the cache; add_metric_to_cache first")
        return self.cache[key]

    def add_metric_to_cache(self, metric_name: str, unit: str, dimension_names: list[str] = (),  # type: ignore[assignment]
                            metric_type: Any = MetricTypes.COUNTER) -> CachedMetric:
        kind = _type_name(metric_type)
        metric = CachedMetric(self, metric_name, unit, list(dimension_names or []), kind)
        self.cache[(kind, metric_name)] = metric
        return metric

    def _get_or_add(self, name: str, unit: str, dimension_names: list[str], kind: str) -> CachedMetric:
        metric = self.cache.get((kind, name))
        if metric is None or metric.dimension_names != dimension_names:
            metric = CachedMetric(self, name, unit, dimension_names, kind)
            self.cache[(kind, name)] = metric
        return metric


def _type_name(metric_type: Any) -> str:
    value = getattr(metric_type, "value", metric_type)
    value = str(value).lower()
    if value not in ("counter", "gauge", "histogram"):
        raise MetricsCacheError(f"metric type {metric_type!r} is not counter, gauge or histogram")
    return value
