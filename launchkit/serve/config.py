"""Server configuration: config.properties (TorchServe's keys), CLI flags, per-model settings.

Precedence, lowest first (as TorchServe documents it): built-in defaults < config.properties <
the archive's model-config.yaml < command-line flags. The server reads settings only from the
``ServerConfig`` built here, and prints its effective form at start-up.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from launchkit.errors import UsageError
from launchkit.optimize.spec import OptimizationSpec, SpecError, parse_spec

DEFAULT_BATCH_DELAY_MS = 100.0
DEFAULT_RESPONSE_TIMEOUT_S = 120.0

SUPPORTED_KEYS = {
    "inference_address", "management_address", "metrics_address", "model_store", "load_models", "models",
    "job_queue_size", "default_workers_per_model", "max_request_size", "max_response_size", "ipex_enable",
    "cpu_launcher_enable", "cpu_launcher_args", "default_response_timeout", "management_token", "inference_token",
    "allowed_urls", "enable_model_api", "enable_metrics_api", "unregister_model_timeout", "disable_token_authorization",
}
# TorchServe keys that mean nothing here (Java/Netty tuning, features of other issues): accepted quietly
# would hide a typo, so each gets a one-line note instead of a warning.
IGNORED_KEYS = {
    "number_of_netty_threads", "netty_client_threads", "vmargs", "async_logging", "prefer_direct_buffer",
    "default_startup_timeout", "initial_worker_port", "metrics_mode", "metrics_config",
    "enable_envvars_config", "install_py_dep_per_model", "decode_input_request", "limit_max_image_pixels",
    "model_metrics_auto_detect", "ts_open_inference_protocol", "use_env_allowed_urls", "blacklist_env_vars",
    "number_of_gpu", "workflow_store", "keep_alive", "max_workers",
}


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class ModelSettings:
    batch_size: int = 1
    max_batch_delay_ms: float = DEFAULT_BATCH_DELAY_MS
    workers: int = 1
    response_timeout_s: float = DEFAULT_RESPONSE_TIMEOUT_S
    job_queue_size: int = 100
    optimization: OptimizationSpec = OptimizationSpec()


@dataclass(frozen=True)
class ModelSource:
    """One model to load: where its archive is, and the name it is served under (None: from the manifest)."""

    path: Path
    name: str | None = None


@dataclass(frozen=True)
class ServerConfig:
    inference_address: Address = Address("127.0.0.1", 8080)
    management_address: Address = Address("127.0.0.1", 8081)
    metrics_address: Address = Address("127.0.0.1", 8082)
    model_store: Path | None = None
    load_models: tuple[str, ...] = ()
    models_json: dict[str, Any] = field(default_factory=dict)
    job_queue_size: int = 100
    default_workers_per_model: int | None = None
    max_request_size: int = 6_553_500
    max_response_size: int = 6_553_500
    ipex_enable: bool = False
    cpu_launcher_enable: bool | None = None  # None: not said; launchkit pins workers anyway
    cpu_launcher_args: str = ""
    default_response_timeout_s: float = DEFAULT_RESPONSE_TIMEOUT_S
    management_token: str | None = None
    inference_token: str | None = None
    allowed_urls: tuple[str, ...] = ()  # regexes; empty: the model store only
    enable_model_api: bool = True
    enable_metrics_api: bool = True
    unregister_model_timeout_s: float = 120.0
    source: str = "defaults"
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def effective(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("inference_address", "management_address", "metrics_address"):
            data[key] = str(getattr(self, key))
        data["model_store"] = str(self.model_store) if self.model_store else None
        for key in ("management_token", "inference_token"):
            data[key] = "(set)" if data[key] else None  # never print a secret
        data.pop("warnings")
        data.pop("notes")
        return data

    def pinned_sha256(self, name: str, version: str) -> str | None:
        """``"sha256"`` of a model in ``models={...}``: its archive must have this digest to load."""
        per_model = self.models_json.get(name)
        entry = per_model.get(version) if isinstance(per_model, dict) else None
        return entry.get("sha256") if isinstance(entry, dict) else None

    def model_settings(self, name: str, version: str, archive_config: dict[str, Any]) -> ModelSettings:
        """Settings of one model: defaults < config.properties models={...} < model-config.yaml."""
        settings = ModelSettings(
            workers=self.default_workers_per_model or 1,
            response_timeout_s=self.default_response_timeout_s,
            job_queue_size=self.job_queue_size,
            # ipex_enable=true: IPEX when importable, else the native equivalent of ipex.optimize
            optimization=OptimizationSpec(channels_last=True, graph="torchscript", ipex=True) if self.ipex_enable
            else OptimizationSpec(),
        )
        per_model = self.models_json.get(name, {})
        if isinstance(per_model, dict):
            versioned = per_model.get(version) or next(iter(per_model.values()), {}) if per_model else {}
            settings = _apply(settings, versioned if isinstance(versioned, dict) else {}, f"models={name}")
        return _apply(settings, archive_config, f"{name} model-config.yaml")


_MODEL_KEYS = {
    "batchSize": ("batch_size", int),
    "maxBatchDelay": ("max_batch_delay_ms", float),
    "minWorkers": ("workers", int),
    "responseTimeout": ("response_timeout_s", float),
    "jobQueueSize": ("job_queue_size", int),
}


def _apply(settings: ModelSettings, values: dict[str, Any], where: str) -> ModelSettings:
    changes: dict[str, Any] = {}
    if values.get("optimization") is not None:
        try:
            spec = parse_spec(values["optimization"], f"{where}: optimization")
        except SpecError as error:
            raise UsageError(str(error)) from None
        changes["optimization"] = replace(spec, ipex=settings.optimization.ipex)
    for key, value in values.items():
        if key not in _MODEL_KEYS:
            continue
        attribute, kind = _MODEL_KEYS[key]
        try:
            changes[attribute] = kind(value)
        except (TypeError, ValueError):
            raise UsageError(f"{where}: {key}={value!r} is not a number") from None
        if changes[attribute] < (0 if attribute == "max_batch_delay_ms" else 1):
            raise UsageError(f"{where}: {key}={value!r} is out of range")
    return replace(settings, **changes)


def parse_properties(text: str) -> dict[str, str]:
    """Java .properties: ``key=value`` / ``key: value``, # and ! comments, backslash continuations."""
    entries: dict[str, str] = {}
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip() if not pending else raw.lstrip()
        if not pending and (not line or line[0] in "#!"):
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending += line[:-1]
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    for line in logical:
        match = re.match(r"([^=:\s]+)\s*[=:\s]\s*(.*)$", line)
        if match:
            entries[match.group(1)] = match.group(2).strip()
        else:
            entries[line] = ""
    return entries


def parse_address(value: str, key: str) -> Address:
    url = urlparse(value if "://" in value else f"http://{value}")
    if url.scheme != "http":
        raise UsageError(f"{key}={value}: only http:// addresses are supported (TLS is not built in; put a proxy in front)")
    if url.port is None:
        raise UsageError(f"{key}={value}: give a port, e.g. http://127.0.0.1:8080")
    return Address(url.hostname or "127.0.0.1", url.port)


def load_config(path: str | None) -> ServerConfig:
    if path is None:
        return ServerConfig()
    file = Path(path)
    try:
        entries = parse_properties(file.read_text())
    except OSError as error:
        raise UsageError(f"--ts-config {path}: {error.strerror}") from None
    return config_from_properties(entries, str(file))


def config_from_properties(entries: dict[str, str], source: str) -> ServerConfig:
    warnings: list[str] = []
    notes: list[str] = []
    values: dict[str, Any] = {"source": source}
    for key, value in entries.items():
        if key in IGNORED_KEYS:
            notes.append(f"{source}: {key} is a TorchServe setting launchkit serve does not use; ignored")
        elif key not in SUPPORTED_KEYS:
            warnings.append(f"{source}: unknown key {key!r} ignored (typo?)")
    for key in ("inference_address", "management_address", "metrics_address"):
        if key in entries:
            values[key] = parse_address(entries[key], key)
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
    for key, attribute in (("job_queue_size", "job_queue_size"), ("default_workers_per_model", "default_workers_per_model"),
                           ("max_request_size", "max_request_size"), ("max_response_size", "max_response_size")):
        if key in entries:
            values[attribute] = _positive_int(entries[key], key, source)
    if "default_response_timeout" in entries:
        values["default_response_timeout_s"] = float(_positive_int(entries["default_response_timeout"],
                                                                   "default_response_timeout", source))
    for key in ("ipex_enable", "cpu_launcher_enable"):
        if key in entries:
            values[key] = _boolean(entries[key], key, source)
    if "cpu_launcher_args" in entries:
        values["cpu_launcher_args"] = entries["cpu_launcher_args"]
    for key in ("management_token", "inference_token"):
        if entries.get(key):
            values[key] = entries[key]
    if entries.get("allowed_urls"):
        values["allowed_urls"] = parse_allowed_urls(entries["allowed_urls"], source)
    for key in ("enable_model_api", "enable_metrics_api"):
        if key in entries:
            values[key] = _boolean(entries[key], key, source)
    if "unregister_model_timeout" in entries:
        values["unregister_model_timeout_s"] = float(_positive_int(entries["unregister_model_timeout"],
                                                                   "unregister_model_timeout", source))
    if "disable_token_authorization" in entries:
        notes.append(f"{source}: disable_token_authorization: launchkit asks for a token only where one is set "
                     "(management_token / inference_token), and requires it when management is not on loopback")
    return ServerConfig(**values, warnings=tuple(warnings), notes=tuple(notes))


def parse_allowed_urls(value: str, source: str) -> tuple[str, ...]:
    """TorchServe's format: comma-separated regular expressions, each matched against the whole URL."""
    patterns = tuple(item.strip() for item in value.split(",") if item.strip())
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise UsageError(f"{source}: allowed_urls: {pattern!r} is not a regular expression ({error})") from None
    return patterns


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _positive_int(value: str, key: str, source: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"{source}: {key}={value!r} is not an integer") from None
    if number < 1:
        raise UsageError(f"{source}: {key}={value} must be at least 1")
    return number


def _boolean(value: str, key: str, source: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise UsageError(f"{source}: {key}={value!r}: expected true or false")
