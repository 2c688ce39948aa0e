"""Turn a model into its optimized form, with PyTorch alone (IPEX when asked and importable).

For bf16, the weights of Linear, convolution and embedding layers are converted once and the
model runs under autocast (which keeps norms and softmax in fp32). With ``graph=torchscript`` and
``dtype=bf16`` the model is traced *inside* autocast: the casts are recorded in the graph and
freezing folds the weights already converted, which made the fastest of the combinations tried
(eager, traced and frozen, channels-last, autocast around a traced graph; `launchkit optimize`
measures the path it builds against the original on the machine it runs on). A model that is
TorchScript already cannot be re-traced; it runs under autocast as it is.

int8 is static post-training quantization by default: the model is captured with torch.fx,
observers calibrate on real inputs (``calibration``), and convolutions and Linear layers become
int8 with per-channel weights (x86 backend: oneDNN with VNNI/AMX-INT8), then traced and frozen
like any graph. torch.export's PT2E flow (torchao's X86InductorQuantizer, then inductor) was the
first choice and was measured out: on torch 2.13 with torchao 0.18 it refuses models that reuse a
module, as torchvision's ResNets reuse their ReLU ("Input partition has more than one output
node"). A model FX cannot capture (data-dependent control flow) falls back to dynamic quantization
of its Linear layers, said in the notes. ``int8=dynamic`` asks for the latter directly: no
calibration, Linear layers only (it breaks all-MiniLM-L6-v2's embeddings: benchmarks/optimize_anchors.py
--only int8 measures the cosine). The accuracy gate of ``launchkit optimize`` exists for exactly this.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from launchkit.model.spec import OptimizationSpec


class OptimizedModel:
    """A callable model plus the path that actually runs (``description``) and any fallbacks (``notes``)."""

    def __init__(self, model: Any, spec: OptimizationSpec, example: Callable[[], tuple[Any, ...]] | None,
                 calibration: Callable[[], Iterable[tuple[Any, ...]]] | None = None) -> None:
        import torch

        self.torch = torch
        self.spec = spec
        self.notes: list[str] = []
        self._example = example
        self._calibration = calibration
        self._graph_pending = spec.graph != "none"
        self.model = self._prepare(model.eval())
        self.autocast = spec.dtype == "bf16"
        self.traced: Any = None
        if self._graph_pending and example is not None:
            self._build_graph(example())

    # -- building ------------------------------------------------------------------------------

    def _prepare(self, model: Any) -> Any:
        torch = self.torch
        self.is_script = isinstance(model, torch.jit.ScriptModule)
        if self.spec.ipex:
            try:
                import intel_extension_for_pytorch as ipex  # noqa: F401 - optional, archived upstream

                self.notes.append("IPEX optimize applied (ipex_enable=true)")
                return ipex.optimize(model, dtype=torch.bfloat16 if self.spec.dtype == "bf16" else None)
            except ImportError:
                self.notes.append("ipex_enable=true but intel_extension_for_pytorch is not importable: the native "
                                  "path runs instead")
        if self.spec.dtype == "int8":
            if self.is_script:
                self.notes.append("int8 needs an eager model (TorchScript cannot be quantized here): kept fp32")
            else:
                model = self._quantize(model)
        if self.spec.channels_last and not self.is_script:
            model = model.to(memory_format=torch.channels_last)
        if self.spec.dtype == "bf16" and not self.is_script:
            # Autocast casts every weight again on every call; converted once here, those casts are
            # no-ops (without this, bf16 all-MiniLM was slower than fp32: benchmarks/optimize_anchors.py
            # measures the served ratio). Norms and softmax stay fp32 under autocast.
            for module in model.modules():
                if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d,
                                       torch.nn.Embedding)):
                    module.to(torch.bfloat16)
        if self.is_script and self.spec.graph == "torchscript":
            self.notes.append("the model is TorchScript already: not re-traced")
            self._graph_pending = False
        return model

    def _quantize(self, model: Any) -> Any:
        import warnings

        torch = self.torch
        with warnings.catch_warnings():  # torch.ao's deprecation notices (torchao is its successor)
            warnings.simplefilter("ignore")
            if self.spec.int8 == "static":
                if self._example is None:
                    self.notes.append("static int8 needs example inputs to calibrate: dynamic int8 instead")
                else:
                    try:
                        return self._quantize_static(model)
                    except Exception as error:  # noqa: BLE001 - FX capture fails in many ways
                        self.notes.append(f"static int8 failed ({type(error).__name__}: {str(error)[:160]}): "
                                          "dynamic int8 of Linear layers instead")
            return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)

    def _quantize_static(self, model: Any) -> Any:
        torch = self.torch
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        torch.backends.quantized.engine = "x86"
        assert self._example is not None
        example = self._example()
        mapping = get_default_qconfig_mapping("x86")
        convolutional = any(isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)) for m in model.modules())
        if not convolutional:
            # Linear-only models (MLPs, transformers): quantize the Linear layers alone; quantizing
            # everything, norms, softmax and attention's matmuls included, ruined all-MiniLM
            # (least cosine 0.05) and ran slower than bf16
            from torch.ao.quantization import QConfigMapping

            mapping = QConfigMapping().set_object_type(torch.nn.Linear, mapping.global_qconfig)
            self.notes.append("Linear layers only (the model has no convolution)")
        prepared = prepare_fx(model, mapping, example)
        batches = list(self._calibration()) if self._calibration is not None else [example]
        with torch.inference_mode():
            for batch in batches:
                prepared(*batch)
        if self._calibration is None:
            self.notes.append("calibrated on the example inputs only: give real ones (--calibration) for accuracy")
        else:
            self.notes.append(f"calibrated on {sum(batch[0].shape[0] for batch in batches)} inputs")
        return convert_fx(prepared)

    def _inputs(self, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        if not self.spec.channels_last:
            return inputs
        channels_last = self.torch.channels_last
        return tuple(x.contiguous(memory_format=channels_last) if hasattr(x, "dim") and x.dim() == 4 else x
                     for x in inputs)

    def _context(self) -> Any:
        if self.autocast:
            return self.torch.autocast("cpu", dtype=self.torch.bfloat16)
        return contextlib.nullcontext()

    def _build_graph(self, inputs: tuple[Any, ...]) -> None:
        """Trace (under autocast for bf16) and freeze, or compile; any failure leaves the eager path."""
        torch = self.torch
        self._graph_pending = False
        inputs = self._inputs(inputs)
        try:
            with torch.inference_mode(), self._context():
                if self.spec.graph == "torchscript":
                    traced = torch.jit.freeze(torch.jit.trace(self.model, inputs, check_trace=False).eval())
                else:
                    traced = torch.compile(self.model)
                for _ in range(2):  # the profiling executor specialises after a couple of runs
                    traced(*inputs)
            self.traced = traced
            if self.spec.graph == "torchscript":
                self.model = traced  # the frozen graph holds the weights: let the eager copy go
        except Exception as error:  # noqa: BLE001 - tracing / compiling can fail in many ways
            self.notes.append(f"{self.spec.graph} failed ({type(error).__name__}: {str(error)[:200]}): eager path")

    def __getattr__(self, name: str) -> Any:
        # handlers may reach into the model (parameters(), eval(), custom attributes)
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)

    # -- running -------------------------------------------------------------------------------

    def __call__(self, *inputs: Any) -> Any:
        torch = self.torch
        if self._graph_pending:
            self._build_graph(inputs)
        inputs = self._inputs(inputs)
        with torch.inference_mode():
            if self.traced is not None and self.spec.graph == "torchscript":
                output = self.traced(*inputs)  # the casts are part of the traced graph
            else:
                with self._context():
                    output = (self.traced or self.model)(*inputs)
        return _to_float(output)

    @property
    def description(self) -> str:
        path = self.spec.describe()
        if self.spec.graph != "none" and self.traced is None and not self._graph_pending:
            path = path.replace("TorchScript trace + freeze", "eager").replace("torch.compile", "eager")
        if self.is_script and "eager" in path:
            path = path.replace("eager", "TorchScript as archived")
        return path + (f" [{'; '.join(self.notes)}]" if self.notes else "")


def _to_float(output: Any) -> Any:
    if hasattr(output, "is_floating_point") and output.is_floating_point() and output.dtype != _float32():
        return output.float()
    if isinstance(output, (tuple, list)):
        return type(output)(_to_float(item) for item in output)
    return output


def _float32() -> Any:
    import torch

    return torch.float32


def optimize_model(model: Any, spec: OptimizationSpec,
                   example: Callable[[], tuple[Any, ...]] | None = None,
                   calibration: Callable[[], Iterable[tuple[Any, ...]]] | None = None) -> OptimizedModel:
    """``example``: makes example inputs for tracing/compiling now; without it the first call does.
    ``calibration``: batches of real inputs for static int8 (never the ones accuracy is measured on).
    The model is converted in place (channels-last, bf16 weights): pass a copy you will not use otherwise."""
    return OptimizedModel(model, spec, example, calibration)
