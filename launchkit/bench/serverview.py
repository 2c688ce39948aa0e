"""The server's own view of a bench level, from a launchkit server's management API and /metrics.

Bench scrapes /metrics before and after each level and reports the difference for the model
under test: where the time went inside the server (queue wait, handler time by stage), how full
the batches were, and the server's count of answers by status. Histogram percentiles are
estimated from bucket counts, as Prometheus' ``histogram_quantile`` does (linear within a
bucket), so they are approximate; means are exact.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(metrics_url: str, timeout: float = 3.0) -> Samples | None:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout) as response:
            text = response.read().decode()
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text) for sample in family.samples}
    except (OSError, ValueError):
        return None


def read_model_description(management_url: str, model: str, version: str | None = None) -> dict[str, Any] | None:
    """``GET /models/{model}[/{version}]`` of a launchkit (or TorchServe) management API: the settings as applied."""
    path = f"/models/{model}" + (f"/{version}" if version else "")
    try:
        with urllib.request.urlopen(management_url.rstrip("/") + path, timeout=5) as response:
            described = json.loads(response.read())
        return described[0] if isinstance(described, list) and described else None
    except (OSError, ValueError):
        return None


def _model_series(samples: Samples, name: str, model: str, version: str | None) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of ``name`` for the model (any version unless given), keyed by their other labels."""
    selected: dict[tuple[tuple[str, str], ...], float] = {}
    for (sample_name, labels), value in samples.items():
        if sample_name != name:
            continue
        label_map = dict(labels)
        if label_map.get("model") != model or (version is not None and label_map.get("version") != version):
            continue
        rest = tuple((k, v) for k, v in labels if k not in ("model", "version"))
        selected[rest] = selected.get(rest, 0.0) + value
    return selected


def _delta(before: Samples, after: Samples, name: str, model: str, version: str | None) -> dict[Any, float]:
    old = _model_series(before, name, model, version)
    return {key: value - old.get(key, 0.0) for key, value in _model_series(after, name, model, version).items()}


def histogram_quantile(quantile: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' estimate from cumulative bucket counts (upper bound → count)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = quantile * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            width = count - below
            return lower + (bound - lower) * ((rank - below) / width if width > 0 else 1.0)
        lower, below = bound, count
    return lower


def _histogram(before: Samples, after: Samples, name: str, model: str, version: str | None,
               scale: float, **match: str) -> dict[str, float] | None:
    wanted = tuple(sorted(match.items()))
    count = sum(v for k, v in _delta(before, after, f"{name}_count", model, version).items() if k == wanted)
    total = sum(v for k, v in _delta(before, after, f"{name}_sum", model, version).items() if k == wanted)
    if count <= 0:
        return None
    buckets: dict[float, float] = {}
    for labels, value in _delta(before, after, f"{name}_bucket", model, version).items():
        label_map = dict(labels)
        if all(label_map.get(k) == v for k, v in match.items()):
            bound = float(label_map["le"])
            buckets[bound] = buckets.get(bound, 0.0) + value
    view: dict[str, Any] = {"count": int(count), "mean": round(total / count * scale, 3)}
    lowest = min((bound for bound in buckets if bound > 0), default=None)
    for quantile in (0.5, 0.99):
        estimate = histogram_quantile(quantile, buckets)
        if estimate is not None:
            key = f"p{quantile * 100:g}"
            view[key] = round(estimate * scale, 3)
            if lowest is not None and estimate <= lowest:  # inside the first bucket: only "below its bound" is known
                view[f"{key}_below"] = round(lowest * scale, 3)
    return view


def server_view(before: Samples | None, after: Samples | None, model: str, version: str | None = None) -> dict[str, Any] | None:
    """What the server saw of one level, or None when its metrics are not available."""
    if before is None or after is None:
        return None
    requests = {dict(labels).get("code", "?"): int(value)
                for labels, value in _delta(before, after, "launchkit_requests_total", model, version).items() if value}
    if not requests:
        return None
    view: dict[str, Any] = {"requests_by_status": requests}
    for key, name, scale in (("latency_ms", "launchkit_request_latency_seconds", 1000.0),
                             ("queue_wait_ms", "launchkit_queue_wait_seconds", 1000.0),
                             ("batch_size", "launchkit_batch_size", 1.0)):
        histogram = _histogram(before, after, name, model, version, scale)
        if histogram is not None:
            view[key] = histogram
    stages = {}
    for stage in ("preprocess", "inference", "postprocess", "handle"):
        histogram = _histogram(before, after, "launchkit_handler_seconds", model, version, 1000.0, stage=stage)
        if histogram is not None:
            stages[stage] = histogram
    if stages:
        view["handler_ms"] = stages
    return view
