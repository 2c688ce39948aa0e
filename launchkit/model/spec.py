"""What optimization a model gets: parsed from model-config.yaml, config.properties, the command
line or the management API, validated, and described. Pure (no torch).

Spellings accepted everywhere: a mapping ``{"dtype": "bf16", "channels_last": true, "graph":
"torchscript"}`` or the compact string ``"dtype=bf16,channels_last=true,graph=torchscript"``
(also ``"bf16,channels_last,torchscript"``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from launchkit.core.errors import SpecError, UsageError
from launchkit.core.values import parse_bool

DTYPES = ("fp32", "bf16", "int8")
GRAPHS = ("none", "torchscript", "compile")


@dataclass(frozen=True)
class OptimizationSpec:
    dtype: str = "fp32"
    channels_last: bool = False
    graph: str = "none"
    ipex: bool = False  # ipex_enable=true: use IPEX when importable, else this native path
    int8: str = "static"  # how int8 is made: static (calibrated, convolutions and Linear) or dynamic (Linear)

    @property
    def is_identity(self) -> bool:
        return self.dtype == "fp32" and not self.channels_last and self.graph == "none" and not self.ipex

    def describe(self) -> str:
        parts = [{"fp32": "fp32", "bf16": "bf16 (autocast, AMX where present)",
                  "int8": "int8 (static: calibrated, convolutions and Linear, per-channel weights)"
                  if self.int8 == "static" else "int8 (dynamic, Linear layers)"}[self.dtype]]
        if self.channels_last:
            parts.append("channels-last")
        parts.append({"none": "eager", "torchscript": "TorchScript trace + freeze", "compile": "torch.compile"}[self.graph])
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def compact(self) -> str:
        int8 = f",int8={self.int8}" if self.dtype == "int8" else ""
        return f"dtype={self.dtype},channels_last={str(self.channels_last).lower()},graph={self.graph}{int8}"


def parse_spec(value: Any, where: str = "optimization") -> OptimizationSpec:
    """A spec from a mapping, a compact string, or None (the identity)."""
    if value is None or value == "" or value == {}:
        return OptimizationSpec()
    if isinstance(value, OptimizationSpec):
        return value
    if isinstance(value, str):
        value = _parse_compact(value, where)
    if not isinstance(value, dict):
        raise SpecError(f"{where}: expected a mapping like {{dtype: bf16, channels_last: true, graph: torchscript}}")
    unknown = sorted(set(value) - {"dtype", "channels_last", "graph", "ipex", "int8"})
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)}; known: dtype, channels_last, graph, int8")
    int8 = str(value.get("int8", "static")).lower()
    if int8 not in ("static", "dynamic"):
        raise SpecError(f"{where}: int8={int8!r} is not static or dynamic")
    dtype = str(value.get("dtype", "fp32")).lower()
    dtype = {"float32": "fp32", "bfloat16": "bf16", "qint8": "int8"}.get(dtype, dtype)
    if dtype not in DTYPES:
        raise SpecError(f"{where}: dtype={dtype!r} is not one of {', '.join(DTYPES)}")
    graph = str(value.get("graph", "none")).lower()
    graph = {"jit": "torchscript", "script": "torchscript", "eager": "none", "off": "none"}.get(graph, graph)
    if graph not in GRAPHS:
        raise SpecError(f"{where}: graph={graph!r} is not one of {', '.join(GRAPHS)}")
    return OptimizationSpec(dtype, _flag(value.get("channels_last", False), f"{where}: channels_last"), graph,
                            _flag(value.get("ipex", False), f"{where}: ipex"), int8)


def _parse_compact(text: str, where: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in (part.strip() for part in text.split(",") if part.strip()):
        key, has_value, value = item.partition("=")
        if has_value:
            result[key.strip().replace("-", "_")] = value.strip()
        elif item.lower() in DTYPES + ("bfloat16", "float32"):
            result["dtype"] = item
        elif item.lower() in GRAPHS + ("jit", "eager"):
            result["graph"] = item
        elif item.replace("-", "_").lower() == "channels_last":
            result["channels_last"] = True
        else:
            raise SpecError(f"{where}: {item!r} is not a dtype ({', '.join(DTYPES)}), a graph mode "
                            f"({', '.join(GRAPHS)}) or channels_last")
    return result


def _flag(value: Any, where: str) -> bool:
    try:
        return parse_bool(value, where)
    except UsageError as error:
        raise SpecError(str(error)) from None
