"""Every setting of `launchkit serve`, where it can come from, and the one order they apply in.

Server-wide settings, lowest precedence first:

    built-in defaults < config.properties (--ts-config) < environment (LAUNCHKIT_<KEY> for any
                      key, e.g. LAUNCHKIT_MANAGEMENT_TOKEN; TorchServe's TS_<KEY> with
                      enable_envvars_config=true) < command-line flags

Per-model settings (batch size and delay, workers, response timeout, queue size, optimization),
lowest first — TorchServe's documented order (config.properties < model-config.yaml < REST),
with the command line between the archive and the API:

    built-in defaults
    < config.properties server-wide keys (default_workers_per_model, job_queue_size,
      default_response_timeout, ipex_enable)
    < config.properties models={"name": {"version": {...}}}
    < the archive's model-config.yaml
    < command-line flags (--batch-size, --max-batch-delay, --workers, --optimization; for the models
      loaded at start-up)
    < the management API (POST /models parameters; PUT /models/{m}?min_worker=)

``ipex_enable`` is server-wide and survives a per-model optimization (it means: use IPEX when it
is importable). The server reads settings only from the objects built here, and prints the
effective configuration at start-up.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from launchkit.core.errors import UsageError
from launchkit.core.values import parse_bool
from launchkit.model.spec import OptimizationSpec, parse_spec
from launchkit.serve.addresses import Address, is_loopback, parse_address
from launchkit.serve.limits import Limits, parse_limits
from launchkit.serve.properties import parse_properties

DEFAULT_BATCH_DELAY_MS = 100.0
DEFAULT_RESPONSE_TIMEOUT_S = 120.0
TOKEN_VARIABLES = {"management_token": "LAUNCHKIT_MANAGEMENT_TOKEN", "inference_token": "LAUNCHKIT_INFERENCE_TOKEN"}

SUPPORTED_KEYS = {
    "inference_address", "management_address", "metrics_address", "model_store", "load_models", "models",
    "job_queue_size", "default_workers_per_model", "max_request_size", "max_response_size", "ipex_enable",
    "cpu_launcher_enable", "cpu_launcher_args", "default_response_timeout", "management_token", "inference_token",
    "allowed_urls", "enable_model_api", "enable_metrics_api", "unregister_model_timeout", "disable_token_authorization",
    "max_load_failures", "max_header_size", "max_headers", "header_timeout", "body_timeout", "keep_alive_timeout",
    "max_connections", "max_tensor_elements", "max_archive_size", "max_archive_entries", "max_archive_ratio",
    "management_allowed_hosts", "allow_shared_cores", "enable_envvars_config", "fork_workers",
    "grpc_inference_address", "grpc_management_address", "grpc_inference_port", "grpc_management_port",
    "grpc_processes", "batch_ahead",
}
# TorchServe keys that mean nothing here (Java/Netty tuning, features of other issues): accepted quietly
# would hide a typo, so each gets a one-line note instead of a warning.
IGNORED_KEYS = {
    "number_of_netty_threads", "netty_client_threads", "vmargs", "async_logging", "prefer_direct_buffer",
    "default_startup_timeout", "initial_worker_port", "metrics_mode", "metrics_config",
    "install_py_dep_per_model", "decode_input_request", "limit_max_image_pixels",
    "model_metrics_auto_detect", "ts_open_inference_protocol", "use_env_allowed_urls", "blacklist_env_vars",
    "number_of_gpu", "workflow_store", "keep_alive", "max_workers",
}
# model-config.yaml / models={...} keys: (ModelSettings attribute, type)
MODEL_KEYS = {
    "batchSize": ("batch_size", int),
    "maxBatchDelay": ("max_batch_delay_ms", float),
    "minWorkers": ("workers", int),
    "responseTimeout": ("response_timeout_s", float),
    "jobQueueSize": ("job_queue_size", int),
    "streams": ("streams", int),  # launchkit's: batches one worker runs at once (one copy of the weights)
}


@dataclass(frozen=True)
class ModelSettings:
    batch_size: int = 1
    max_batch_delay_ms: float = DEFAULT_BATCH_DELAY_MS
    workers: int = 1
    response_timeout_s: float = DEFAULT_RESPONSE_TIMEOUT_S
    job_queue_size: int = 100
    optimization: OptimizationSpec = OptimizationSpec()
    streams: int = 1  # per worker: batches at once, each on its share of the worker's cores


@dataclass(frozen=True)
class ModelOverrides:
    """Per-model settings from the command line or the management API (None: not given)."""

    batch_size: int | None = None
    max_batch_delay_ms: float | None = None
    workers: int | None = None
    response_timeout_s: float | None = None
    optimization: OptimizationSpec | None = None
    streams: int | None = None

    def apply(self, settings: ModelSettings) -> ModelSettings:
        changes = {key: value for key, value in vars(self).items() if value is not None}
        if self.optimization is not None:  # ipex_enable (server-wide) survives a per-model choice
            changes["optimization"] = replace(self.optimization, ipex=settings.optimization.ipex)
        return replace(settings, **changes)


@dataclass(frozen=True)
class ModelSource:
    """One model to load: where its archive is, and the name it is served under (None: from the manifest)."""

    path: Path
    name: str | None = None


@dataclass(frozen=True)
class ServerFlags:
    """What `launchkit serve`'s command line says about the server (None: not given)."""

    ts_config: str | None = None
    model_store: str | None = None
    inference_address: str | None = None
    management_address: str | None = None
    metrics_address: str | None = None
    grpc_address: str | None = None
    grpc_management_address: str | None = None
    grpc_processes: int | None = None
    cpu_launcher_args: str | None = None
    allow_shared_cores: bool = False


@dataclass(frozen=True)
class ServerConfig:
    inference_address: Address = Address("127.0.0.1", 8080)
    management_address: Address = Address("127.0.0.1", 8081)
    metrics_address: Address = Address("127.0.0.1", 8082)
    grpc_inference_address: Address | None = None  # gRPC inference (Open Inference Protocol, TorchServe's); off unless set
    grpc_management_address: Address | None = None  # TorchServe's gRPC management API; off unless set
    grpc_processes: int = 1  # gRPC relay processes (grpc.aio off the frontend's loop); 0: on the frontend's loop
    model_store: Path | None = None
    load_models: tuple[str, ...] = ()
    models_json: dict[str, Any] = field(default_factory=dict)
    job_queue_size: int = 100
    default_workers_per_model: int | None = None
    max_request_size: int = 6_553_500
    max_response_size: int = 6_553_500
    ipex_enable: bool = False
    cpu_launcher_enable: bool | None = None  # None: not said; launchkit pins workers anyway
    allow_shared_cores: bool = False  # more workers than cores: share them (also when cpu_launcher_enable=false)
    fork_workers: bool = True  # restarted and added workers are forked from a process that imported torch once
    batch_ahead: bool = True  # a busy single-stream worker may hold one full batch ahead (docs/serving.md)
    cpu_launcher_args: str = ""
    default_response_timeout_s: float = DEFAULT_RESPONSE_TIMEOUT_S
    management_token: str | None = None
    inference_token: str | None = None
    allowed_urls: tuple[str, ...] = ()  # regexes; empty: the model store only
    enable_model_api: bool = True
    enable_metrics_api: bool = True
    unregister_model_timeout_s: float = 120.0
    max_load_failures: int = 3  # load failures in a row before a model is marked failed (it is still retried)
    limits: Limits = Limits()
    management_allowed_hosts: tuple[str, ...] = ()  # Host names management answers besides loopback and its own
    source: str = "defaults"
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def effective(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("inference_address", "management_address", "metrics_address"):
            data[key] = str(getattr(self, key))
        for key in ("grpc_inference_address", "grpc_management_address"):
            address = getattr(self, key)
            data[key] = grpc_target(address) if address is not None else None
        data["model_store"] = str(self.model_store) if self.model_store else None
        for key in ("management_token", "inference_token"):
            data[key] = "(set)" if data[key] else None  # never print a secret
        data.pop("warnings")
        data.pop("notes")
        return data

    def pinned_digests(self, name: str) -> tuple[str, ...]:
        """Every ``"sha256"`` pinned for model ``name`` in ``models={...}``, whatever version it lists it under:
        an archive served under that name must have one of them (the version an archive declares is the
        archive's word, so it cannot decide which pin applies)."""
        per_model = self.models_json.get(name)
        entries = per_model.values() if isinstance(per_model, dict) else ()
        return tuple(entry["sha256"] for entry in entries if isinstance(entry, dict) and entry.get("sha256"))


def grpc_target(address: Address) -> str:
    """A listening address as gRPC writes it (host:port, IPv6 in brackets)."""
    return f"[{address.host}]:{address.port}" if ":" in address.host else f"{address.host}:{address.port}"


# --------------------------------------------------------------------------------------------
# Server-wide


def server_config(flags: ServerFlags, environ: Mapping[str, str] = os.environ) -> ServerConfig:
    """defaults < config.properties < environment (LAUNCHKIT_<KEY>) < command line, then checked for exposure."""
    config = load_config(flags.ts_config, environ)
    tokens = {key: environ[variable] for key, variable in TOKEN_VARIABLES.items() if environ.get(variable)}
    config = replace(config, **cast(dict[str, Any], tokens))
    if flags.model_store:
        config = replace(config, model_store=Path(flags.model_store))
    for key in ("inference_address", "management_address", "metrics_address"):
        value = getattr(flags, key)
        if value:
            config = replace(config, **cast(dict[str, Any], {key: parse_address(value, "--" + key.replace("_", "-"))}))
    if flags.grpc_address:
        config = replace(config, grpc_inference_address=parse_address(flags.grpc_address, "--grpc-address"))
    if flags.grpc_management_address:
        config = replace(config, grpc_management_address=parse_address(flags.grpc_management_address,
                                                                       "--grpc-management-address"))
    if flags.grpc_processes is not None:
        config = replace(config, grpc_processes=flags.grpc_processes)
    if flags.cpu_launcher_args is not None:
        config = replace(config, cpu_launcher_args=flags.cpu_launcher_args)
    if flags.allow_shared_cores:
        config = replace(config, allow_shared_cores=True)
    return _checked_exposure(config)


def _checked_exposure(config: ServerConfig) -> ServerConfig:
    """Management beyond loopback needs a token (whoever reaches it can load code); metrics get a warning."""
    for key in ("management_address", "grpc_management_address"):
        address = getattr(config, key)
        if address is not None and not is_loopback(address.host) and not config.management_token:
            raise UsageError(
                f"{key} {address} is reachable from other machines, and whoever reaches it can load code "
                "(a .mar runs its handler). Set a token: export LAUNCHKIT_MANAGEMENT_TOKEN=$(openssl rand -hex 32) "
                "(or management_token= in config.properties), or keep management on 127.0.0.1."
            )
    if config.enable_metrics_api and not is_loopback(config.metrics_address.host):
        config = replace(config, warnings=config.warnings + (
            f"metrics_address {config.metrics_address} is reachable from other machines (metrics need no token)",))
    return config


def load_config(path: str | None, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """config.properties (``path``), with any key also given by the environment (see below) on top."""
    entries: dict[str, str] = {}
    if path is not None:
        try:
            entries = parse_properties(Path(path).read_text())
        except OSError as error:
            raise UsageError(f"--ts-config {path}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"--ts-config {path}: not a text file (expected TorchServe's config.properties)") from None
    from_environment = environment_entries(environ or {}, entries)
    if not entries and not from_environment:
        return ServerConfig()
    source = " and ".join(part for part in (path, "the environment" if from_environment else None) if part)
    return config_from_properties({**entries, **from_environment}, source)


def environment_entries(environ: Mapping[str, str], file_entries: Mapping[str, str]) -> dict[str, str]:
    """config.properties keys given as variables, for containers: ``LAUNCHKIT_<KEY>`` always
    (e.g. LAUNCHKIT_INFERENCE_ADDRESS, LAUNCHKIT_DEFAULT_WORKERS_PER_MODEL), and TorchServe's
    ``TS_<KEY>`` where TorchServe would read them (``enable_envvars_config=true``). launchkit's wins."""
    torchserve = parse_bool(environ.get("TS_ENABLE_ENVVARS_CONFIG") or file_entries.get("enable_envvars_config")
                            or "false", "enable_envvars_config")
    found: dict[str, str] = {}
    for key in sorted(SUPPORTED_KEYS):
        for prefix in (("TS_",) if torchserve else ()) + ("LAUNCHKIT_",):
            value = environ.get(prefix + key.upper())
            if value:
                found[key] = value
    return found


def config_from_properties(entries: dict[str, str], source: str) -> ServerConfig:
    warnings: list[str] = []
    notes: list[str] = []
    values: dict[str, Any] = {"source": source}
    for key in entries:
        if key in IGNORED_KEYS:
            notes.append(f"{source}: {key} is a TorchServe setting launchkit serve does not use; ignored")
        elif key not in SUPPORTED_KEYS:
            warnings.append(f"{source}: unknown key {key!r} ignored (typo?)")
    for key in ("inference_address", "management_address", "metrics_address", "grpc_inference_address",
                "grpc_management_address"):
        if key in entries:
            values[key] = parse_address(entries[key], key)
    for key in ("grpc_inference_port", "grpc_management_port"):  # TorchServe's: a port, on loopback here
        address = key.replace("_port", "_address")
        if key in entries and address not in entries:
            values[address] = parse_address(f"127.0.0.1:{_count(entries[key], key, source, least=1)}", key)
    if "grpc_processes" in entries:
        values["grpc_processes"] = _count(entries["grpc_processes"], "grpc_processes", source)
    if "model_store" in entries:
        values["model_store"] = Path(entries["model_store"])
    if entries.get("load_models"):
        values["load_models"] = tuple(item.strip() for item in entries["load_models"].split(",") if item.strip())
    if entries.get("models"):
        try:
            models = json.loads(entries["models"])
        except json.JSONDecodeError as error:
            raise UsageError(f"{source}: models= is not valid JSON ({error})") from None
        if not isinstance(models, dict):
            raise UsageError(f"{source}: models= must be a JSON object of model names")
        values["models_json"] = models
    for key in ("job_queue_size", "default_workers_per_model", "max_request_size", "max_response_size",
                "max_load_failures"):
        if key in entries:
            values[key] = _count(entries[key], key, source, least=1)
    for key, attribute in (("default_response_timeout", "default_response_timeout_s"),
                           ("unregister_model_timeout", "unregister_model_timeout_s")):
        if key in entries:
            values[attribute] = float(_count(entries[key], key, source, least=1))
    for key in ("ipex_enable", "cpu_launcher_enable", "enable_model_api", "enable_metrics_api", "allow_shared_cores",
                "fork_workers", "batch_ahead"):
        if key in entries:
            values[key] = parse_bool(entries[key], f"{source}: {key}")
    if "cpu_launcher_args" in entries:
        values["cpu_launcher_args"] = entries["cpu_launcher_args"]
    for key in ("management_token", "inference_token"):
        if entries.get(key):
            values[key] = entries[key]
    if entries.get("allowed_urls"):
        values["allowed_urls"] = parse_allowed_urls(entries["allowed_urls"], source)
    limits = parse_limits(entries, source)
    if limits != Limits():
        values["limits"] = limits
    if entries.get("management_allowed_hosts"):
        values["management_allowed_hosts"] = tuple(item.strip().lower() for item in
                                                   entries["management_allowed_hosts"].split(",") if item.strip())
    if "disable_token_authorization" in entries:
        notes.append(f"{source}: disable_token_authorization: launchkit asks for a token only where one is set "
                     "(management_token / inference_token), and requires it when management is not on loopback")
    return ServerConfig(**values, warnings=tuple(warnings), notes=tuple(notes))


# --------------------------------------------------------------------------------------------
# Per model


def model_settings(config: ServerConfig, name: str, version: str, archive_config: Mapping[str, Any],
                   overrides: Sequence[ModelOverrides] = ()) -> ModelSettings:
    """One model's settings in the documented order; ``overrides``: command line, then the API."""
    settings = ModelSettings(
        workers=config.default_workers_per_model or 1,
        response_timeout_s=config.default_response_timeout_s,
        job_queue_size=config.job_queue_size,
        # ipex_enable=true: IPEX when importable, else the native equivalent of ipex.optimize
        optimization=OptimizationSpec(channels_last=True, graph="torchscript", ipex=True) if config.ipex_enable
        else OptimizationSpec(),
    )
    per_model = config.models_json.get(name, {})
    if isinstance(per_model, dict) and per_model:
        versioned: Any = per_model.get(version) or next(iter(per_model.values()), {})
        settings = _apply_model_keys(settings, versioned if isinstance(versioned, dict) else {}, f"models={name}")
    settings = _apply_model_keys(settings, archive_config, f"{name} model-config.yaml")
    for layer in overrides:
        settings = layer.apply(settings)
    return settings


def _apply_model_keys(settings: ModelSettings, values: Mapping[str, Any], where: str) -> ModelSettings:
    changes: dict[str, Any] = {}
    if values.get("optimization") is not None:
        spec = parse_spec(values["optimization"], f"{where}: optimization")
        changes["optimization"] = replace(spec, ipex=settings.optimization.ipex)
    for key, value in values.items():
        if key not in MODEL_KEYS:
            continue
        attribute, kind = MODEL_KEYS[key]
        try:
            changes[attribute] = kind(value)
        except (TypeError, ValueError):
            raise UsageError(f"{where}: {key}={value!r} is not a number") from None
        if changes[attribute] < (0 if attribute == "max_batch_delay_ms" else 1):
            raise UsageError(f"{where}: {key}={value!r} is out of range")
    return replace(settings, **changes)


# --------------------------------------------------------------------------------------------
# Values


def parse_allowed_urls(value: str, source: str) -> tuple[str, ...]:
    """TorchServe's format: comma-separated regular expressions, each matched against the whole URL."""
    patterns = tuple(item.strip() for item in value.split(",") if item.strip())
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise UsageError(f"{source}: allowed_urls: {pattern!r} is not a regular expression ({error})") from None
    return patterns


def _count(value: str, key: str, source: str, least: int = 0) -> int:
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"{source}: {key}={value!r} is not an integer") from None
    if number < least:
        raise UsageError(f"{source}: {key}={value} must be at least {least}")
    return number
