"""TorchServe's handler contract, as the worker offers it to handler code.

A handler is a module with either a class that has ``handle`` (instantiated, then
``initialize(context)`` and ``handle(data, context)``) or a module-level ``handle(data, context)``
(called once with ``data=None`` to initialise). ``data`` holds one dict per request of the batch.
Handlers written for TorchServe import ``ts.context``, ``ts.torch_handler.base_handler`` and
``ts.utils.util``; when TorchServe is not installed, :func:`install_ts_shim` makes those names
point here. Imported only in worker processes.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

from launchkit.archive.handlers import BUILTIN_HANDLERS, builtin_handler
from launchkit.model.loading import import_file, load_files
from launchkit.serve.worker.metrics_api import HandlerMetricsCache


class PredictionException(Exception):
    """Raised by a handler to fail the whole batch with ``error_code`` (TorchServe semantics)."""

    def __init__(self, message: str, error_code: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code


class Context:
    """What a handler learns about the model and the requests of the current batch."""

    def __init__(self, model_name: str, model_dir: str, manifest: dict[str, Any], batch_size: int,
                 model_yaml_config: dict[str, Any] | None = None) -> None:
        self.model_name = model_name
        self.manifest = manifest
        self.system_properties = {
            "model_dir": model_dir, "gpu_id": None, "batch_size": batch_size,
            "server_name": "launchkit", "server_version": _version(), "limit_max_image_pixels": True,
        }
        self.model_yaml_config = model_yaml_config or {}
        self.request_ids: dict[int, str] = {}
        self.request_processor: list[dict[str, str]] = []
        self.metrics = HandlerMetricsCache(model_name)  # TorchServe's custom-metrics API
        self.optimization: dict[str, Any] | None = None  # the server's OptimizationSpec, as a dict
        self.stage_times: dict[str, float] = {}  # BaseHandler.handle fills it; the worker reports it
        self._statuses: dict[int, tuple[int, str]] = {}
        self._content_types: dict[int, str] = {}
        self._headers: dict[int, dict[str, str]] = {}

    def replica(self) -> "Context":
        """The same model's context for another stream: per-batch state and metrics of its own."""
        import copy

        twin = copy.copy(self)
        twin.request_ids, twin.request_processor, twin.stage_times = {}, [], {}
        twin._statuses, twin._content_types, twin._headers = {}, {}, {}
        twin.metrics = HandlerMetricsCache(self.model_name)
        return twin

    def start_batch(self, request_ids: list[str], headers: list[dict[str, str]]) -> None:
        self.request_ids = dict(enumerate(request_ids))
        self.request_processor = headers
        self.metrics.set_request_ids(self.request_ids)
        self._statuses, self._content_types, self._headers = {}, {}, {}

    # -- the TorchServe methods -----------------------------------------------------------------

    def get_request_id(self, idx: int = 0) -> str | None:
        return self.request_ids.get(idx)

    def get_request_header(self, idx: int, key: str) -> str | None:
        headers = self.request_processor[idx] if idx < len(self.request_processor) else {}
        return headers.get(key.lower())

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return dict(self.request_processor[idx]) if idx < len(self.request_processor) else {}

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self._statuses[idx] = (int(code), phrase)

    def set_all_response_status(self, code: int = 200, phrase: str = "") -> None:
        for idx in self.request_ids:
            self.set_response_status(code, phrase, idx)

    def get_response_status(self, idx: int) -> tuple[int, str]:
        return self._statuses.get(idx, (200, ""))

    def set_response_content_type(self, idx: int, value: str) -> None:
        self._content_types[idx] = value

    def get_response_content_type(self, idx: int) -> str | None:
        return self._content_types.get(idx)

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self._headers.setdefault(idx, {})[key] = value

    def get_response_headers(self, idx: int) -> dict[str, str]:
        return self._headers.get(idx, {})

    def get_sequence_id(self, idx: int) -> str | None:
        return self.get_request_header(idx, "ts_request_sequence_id")


def load_label_mapping(path: str) -> dict[str, str] | None:
    """``index_to_name.json`` as TorchServe reads it: ``{"0": "tench", ...}``, values that are lists
    (``["n01440764", "tench"]``) give their last item, ``{"object_type_names": [...]}`` is numbered."""
    if not os.path.isfile(path):
        return None
    with open(path) as file:
        mapping = json.load(file)
    if not isinstance(mapping, dict):
        raise RuntimeError(f"{os.path.basename(path)}: expected {{\"class index\": \"label\"}}")
    if isinstance(mapping.get("object_type_names"), list):
        return {str(index): str(name) for index, name in enumerate(mapping["object_type_names"])}
    labels = {}
    for key, value in mapping.items():
        label = value[-1] if isinstance(value, list) and value else value
        if not isinstance(label, str):
            raise RuntimeError(f"{os.path.basename(path)}: the label of class {key} is not a string or a list of them")
        labels[str(key)] = label
    return labels


def map_class_to_label(probabilities: list[list[float]], mapping: dict[str, str] | None = None,
                       classes: list[list[int]] | None = None) -> list[dict[str, Any]]:
    """One ``{label: probability}`` per row (TorchServe's util of the same name); without ``classes``
    every column is a class; without a mapping, labels are the class indices as strings."""
    if classes is None:
        classes = [list(range(len(row))) for row in probabilities]
    return [{(mapping.get(str(c), str(c)) if mapping is not None else str(c)): p for c, p in zip(row_classes, row)}
            for row_classes, row in zip(classes, probabilities)]


def timed(method: Callable[..., Any]) -> Callable[..., Any]:
    """TorchServe's decorator: with ``handler: {profile: true}`` in model-config.yaml, report the
    method's time as ``ts_handler_<name>`` through ``context.metrics``."""

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        config = getattr(self, "model_yaml_config", None) or {}
        if not (config.get("handler") or {}).get("profile"):
            return method(self, *args, **kwargs)
        start = time.perf_counter()
        result = method(self, *args, **kwargs)
        self.context.metrics.add_time(f"ts_handler_{method.__name__}", (time.perf_counter() - start) * 1000)
        return result

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


def _version() -> str:
    from launchkit import __version__

    return __version__


class BaseHandler:
    """preprocess → inference → postprocess, loading TorchScript or eager model.py + state dict."""

    def __init__(self) -> None:
        self.model: Any = None
        self.context: Context | None = None
        self.manifest: dict[str, Any] | None = None
        self.initialized = False
        self.device = "cpu"
        self.map_location = "cpu"
        self.model_yaml_config: dict[str, Any] = {}
        self.mapping: dict[str, str] | None = None  # index_to_name.json, when the archive has one
        self.optimization = "none"  # which execution path runs: shown by the management API

    def initialize(self, context: Context) -> None:
        import torch

        self.context = context
        self.manifest = context.manifest
        self.model_yaml_config = context.model_yaml_config
        model_dir = Path(str(context.system_properties["model_dir"]))
        model = self.manifest.get("model", {})
        self.model = load_files(model_dir, model.get("modelFile"), model.get("serializedFile"))
        self.mapping = load_label_mapping(str(model_dir / "index_to_name.json"))
        quantized = self.model_yaml_config.get("quantized")  # launchkit optimize's int8 archives say so
        self.optimization = (f"TorchScript, {quantized or 'fp32'} (as archived)"
                             if isinstance(self.model, torch.jit.ScriptModule) else "eager, fp32 (as written)")
        self._optimize(context)
        self.initialized = True

    # Handlers whose input has a fixed shape set this (without the batch dimension), so a graph
    # mode is built at load time rather than on the first request; or override example_inputs().
    example_input_shape: tuple[int, ...] | None = None

    def example_inputs(self, batch_size: int) -> tuple[Any, ...] | None:
        import torch

        if self.example_input_shape is None:
            return None
        return (torch.zeros(batch_size, *self.example_input_shape),)

    def _optimize(self, context: Context) -> None:
        """Apply the model's optimization (model-config.yaml, config.properties or the management API)."""
        from launchkit.model.spec import parse_spec
        from launchkit.model.transform import optimize_model

        # the server passes its settled spec (archive < config.properties < command line < API);
        # a handler run some other way reads the archive's model-config.yaml itself
        given = context.optimization if context.optimization is not None else self.model_yaml_config.get("optimization")
        spec = parse_spec(given)
        if spec.is_identity:
            return
        batch = max(1, int(context.system_properties.get("batch_size") or 1))
        example = self.example_inputs(batch)
        self.model = optimize_model(self.model, spec, (lambda: example) if example is not None else None)
        self.optimization = self.model.description

    def preprocess(self, data: list[dict[str, Any]]) -> Any:
        import torch

        rows = []
        for row in data:
            value = row.get("data", row.get("body"))
            if isinstance(value, (bytes, bytearray)):
                rows.append(torch.frombuffer(bytearray(value), dtype=torch.float32))
            else:
                rows.append(torch.as_tensor(value, dtype=torch.float32))
        return torch.stack(rows)

    def inference(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.inference_mode():
            return self.model(data, *args, **kwargs)

    def postprocess(self, data: Any) -> list[Any]:
        return data.tolist()

    def handle(self, data: list[dict[str, Any]], context: Context) -> list[Any]:
        self.context = context
        start = time.perf_counter()
        batch = self.preprocess(data)
        preprocessed = time.perf_counter()
        outputs = self.inference(batch)
        inferred = time.perf_counter()
        results = self.postprocess(outputs)
        context.stage_times = {"preprocess": preprocessed - start, "inference": inferred - preprocessed,
                               "postprocess": time.perf_counter() - inferred}
        return results


def load_entry(model_dir: Path, handler: str) -> tuple[Callable[[Any, Context], Any], Callable[[Context], None]]:
    """Resolve the manifest's handler to (handle, initialize)."""
    module_name, _, function = handler.partition(":")
    if module_name.endswith(".py"):
        module_name = module_name[:-3]
    path = model_dir / f"{module_name}.py"
    builtin = builtin_handler(handler)
    if builtin is not None and not path.is_file():  # a file of the archive wins, as in TorchServe
        default = builtin_class(builtin)()
        return default.handle, default.initialize
    if not path.is_file():
        raise RuntimeError(f"handler {handler!r}: {path.name} is not in the archive, and it is not a default "
                           f"handler ({', '.join(BUILTIN_HANDLERS)})")
    sys.path.insert(0, str(model_dir))
    module = import_file(path, module_name)
    if function:
        entry = getattr(module, function, None)
        if not callable(entry):
            raise RuntimeError(f"handler {handler!r}: {path.name} has no function {function!r}")
        return entry, lambda context: entry(None, context)
    classes = [obj for _, obj in inspect.getmembers(module, inspect.isclass)
               if obj.__module__ == module.__name__ and callable(getattr(obj, "handle", None))]
    if len(classes) == 1:
        instance: Any = classes[0]()
        return instance.handle, instance.initialize if hasattr(instance, "initialize") else (lambda context: None)
    if len(classes) > 1:
        raise RuntimeError(f"handler {path.name} defines {len(classes)} classes with handle(); keep exactly one")
    entry = getattr(module, "handle", None)
    if not callable(entry):
        raise RuntimeError(f"handler {path.name} has neither a class with handle() nor a handle(data, context) function")
    return entry, lambda context: entry(None, context)


# The default handlers' classes, imported when first used (they need torch and PIL).
BUILTIN_CLASSES = {
    "image_classifier": ("launchkit.serve.worker.builtin_vision", "ImageClassifier"),
    "image_segmenter": ("launchkit.serve.worker.builtin_vision", "ImageSegmenter"),
    "object_detector": ("launchkit.serve.worker.builtin_vision", "ObjectDetector"),
    "vision_handler": ("launchkit.serve.worker.builtin_vision", "VisionHandler"),
    "text_classifier": ("launchkit.serve.worker.builtin_text", "TextClassifier"),
    "text_handler": ("launchkit.serve.worker.builtin_text", "TextHandler"),
}


def builtin_class(name: str) -> type:
    if name == "base_handler":
        return BaseHandler
    module, attribute = BUILTIN_CLASSES[name]
    return getattr(importlib.import_module(module), attribute)


def install_ts_shim() -> None:
    """Make TorchServe's handler-facing modules importable when TorchServe is not installed:
    ``ts.context``, ``ts.torch_handler.{base_handler, vision_handler, image_classifier,
    image_segmenter, object_detector, text_handler, text_classifier}``, ``ts.utils.util``,
    ``ts.metrics.{dimension, metric_type_enum}`` and ``ts.handler_utils.timer``. With TorchServe
    installed its own modules are used (its handlers then run on its BaseHandler)."""
    try:
        import ts.context  # noqa: F401  (real TorchServe installed: use it)

        return
    except ImportError:
        pass
    from launchkit.serve.worker.metrics_api import Dimension, MetricTypes

    modules: dict[str, dict[str, Any]] = {
        "ts": {},
        "ts.context": {"Context": Context},
        "ts.torch_handler": {},
        "ts.torch_handler.base_handler": {"BaseHandler": BaseHandler},
        "ts.utils": {},
        "ts.utils.util": {"PredictionException": PredictionException, "map_class_to_label": map_class_to_label,
                          "load_label_mapping": load_label_mapping},
        "ts.metrics": {},
        "ts.metrics.dimension": {"Dimension": Dimension},
        "ts.metrics.metric_type_enum": {"MetricTypes": MetricTypes},
        "ts.handler_utils": {},
        "ts.handler_utils.timer": {"timed": timed},
    }
    for name, (_, attribute) in BUILTIN_CLASSES.items():
        modules[f"ts.torch_handler.{name}"] = {"__getattr__": _lazy(name, attribute)}
    for name, attributes in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        module.__path__ = []  # a package, so submodules resolve
        sys.modules[name] = module


def _lazy(name: str, attribute: str) -> Callable[[str], Any]:
    def attribute_of(requested: str) -> Any:
        if requested != attribute:
            raise AttributeError(f"launchkit's ts.torch_handler.{name} has {attribute}, not {requested}")
        return builtin_class(name)

    return attribute_of
