"""`launchkit bench`'s flags, checked and turned into one :class:`BenchRequest` before anything runs.

The command passes click's values through unchanged; the rules live here, beside the config they
build: a benchmark-ab.py ``--config`` file fills what the command line left out, the target is
given once, closed and open loop are not mixed, and a ``--compare`` baseline must have measured the
same benchmark. Every mistake is a :class:`UsageError` naming the flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launchkit.bench.compare import Threshold, load_summary, parse_fail_on
from launchkit.bench.config import (BenchConfig, comparable, load_ab_config, parse_header, parse_method,
                                    parse_percent, parse_range, parse_warmup)
from launchkit.bench.stats import DEFAULT_PERCENTILES
from launchkit.core.errors import UsageError
from launchkit.core.results import default_report_dir, writable_folder

AB_CONFIG_KEYS = {"report_location": "report_dir", "input": "inputs"}  # benchmark-ab.py's key → our flag


@dataclass(frozen=True)
class BenchRequest:
    """One checked `launchkit bench` invocation."""

    config: BenchConfig
    folder: Path  # the report folder, writable
    fail_on: tuple[Threshold, ...]  # --fail-on, judged against the baseline after the run
    baseline: dict[str, Any] | None  # --compare's summary, same benchmark (or --force)
    notes: tuple[str, ...]  # what the --config file's reading has to say


def bench_request(flags: Mapping[str, Any]) -> BenchRequest:
    """Check ``flags`` (click's values, by parameter name) and build the run they ask for."""
    flags, notes = _with_ab_config(flags)
    target = flags["target"] or flags["url"]
    if flags["target"] and flags["url"] and flags["target"] != flags["url"]:
        raise UsageError("give the target once: as TARGET or as --url")
    config = _config(flags, target)
    config.validate()
    fail_on = tuple(parse_fail_on(flags["fail_on"]))
    folder = writable_folder(flags["report_dir"] or default_report_dir(flags["name"]), "--report-dir")
    baseline = None
    if flags["compare"]:
        baseline = load_summary(flags["compare"])
        reasons = comparable(baseline, config, _model_of(config))
        if reasons and not flags["force"]:
            raise UsageError(f"--compare {flags['compare']}: not the same benchmark: " + "; ".join(reasons)
                             + ". Compare like with like, or --force")
    return BenchRequest(config, folder, fail_on, baseline, tuple(notes))


def _with_ab_config(flags: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The flags with a benchmark-ab.py JSON config's values where the command line gave none."""
    merged: dict[str, Any] = dict(flags)
    notes: list[str] = []
    if merged.get("ab_config"):
        values, notes = load_ab_config(merged["ab_config"])
        for key, value in values.items():
            key = AB_CONFIG_KEYS.get(key, key)
            if key == "inputs":  # one file or a list of files
                value = tuple(value) if isinstance(value, list) else (value,)
            if merged.get(key) in (None, ()):  # flags on the command line win
                merged[key] = value
    return merged, notes


def _config(flags: Mapping[str, Any], target: str | None) -> BenchConfig:
    levels: tuple[int, ...] = (flags["concurrency"],) if flags["concurrency"] else (1,)
    if flags["concurrency_range"]:
        levels = parse_range(flags["concurrency_range"], "--concurrency-range", int)
    rates: tuple[float, ...] = ()
    if flags["rate"] or flags["rate_range"]:
        if flags["concurrency"] or flags["concurrency_range"]:
            raise UsageError("choose closed loop (--concurrency) or open loop (--rate), not both")
        rates = parse_range(flags["rate_range"], "--rate-range", float) if flags["rate_range"] else (flags["rate"],)
    warmup_requests, warmup_s = parse_warmup(str(flags["warmup"]) if flags["warmup"] is not None else "100")
    requests = flags["requests"]
    if requests is None and flags["duration"] is None:
        requests = 1000
    return BenchConfig(
        target=target, concurrency=levels, rates=rates, poisson=flags["poisson"], requests=requests,
        duration_s=flags["duration"], warmup_requests=warmup_requests, warmup_s=warmup_s,
        timeout_s=flags["timeout"] or 30.0, inputs=tuple(flags["inputs"]), content_type=flags["content_type"],
        method=parse_method(flags["method"]) if flags["method"] else None,
        headers=tuple(parse_header(header) for header in flags["headers"]),
        percentiles=tuple(sorted(set(DEFAULT_PERCENTILES) | set(flags["percentile"]))),
        stability=flags["stability"], stability_tolerance=flags["stability_percentage"] / 100,
        max_windows=flags["max_windows"], trials=flags["trials"],
        max_error_rate=parse_percent(flags["max_error_rate"], "--max-error-rate"), clients=flags["clients"],
        workers=flags["workers"], batch_size=flags["batch_size"], batch_delay_ms=flags["batch_delay"],
        cpu_launcher_args=flags["cpu_launcher_args"], name=flags["name"],
        management_url=flags["management_url"], metrics_url=flags["metrics_url"],
    )


def _model_of(config: BenchConfig) -> str | None:
    """The model the run will measure: a local archive's manifest name, else the URL's."""
    from launchkit.archive.manifest import read_manifest
    from launchkit.bench.runner import local_archive, model_of

    archive = local_archive(config)
    return read_manifest(archive).model_name if archive else model_of(config.target or "")[0]
