"""Which instruction-set features the CPU has (AVX-512, AMX, ...), from ``proc/cpuinfo``.

The kernel lists in ``/proc/cpuinfo`` the features it found with CPUID and will let programs
use (AMX needs the kernel's permission, so a flag the kernel hides is one PyTorch cannot use
either). Reading it is a file read; py-cpuinfo, used before, ran CPUID in a subprocess and was
most of ``launchkit info``'s time (benchmarks/cli_cost.py measures info's wall time). py-cpuinfo
remains the fallback where there is no ``proc/cpuinfo`` to read (not Linux).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class IsaFeatures:
    vendor: str | None
    model: str | None
    avx2: bool
    avx512: bool  # AVX-512 Foundation
    avx512_vnni: bool
    avx512_bf16: bool
    amx: bool  # AMX tiles with BF16 (what bf16 autocast uses on Sapphire Rapids and later)
    amx_int8: bool
    source: str
    avx_vnni: bool = False  # VEX-encoded VNNI (Alder Lake, Sapphire Rapids, Zen 5)
    avx512_fp16: bool = False
    amx_fp16: bool = False

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "dtypes": {name: asdict(support) for name, support in dtype_support(self).items()}}


@dataclass(frozen=True)
class DtypeSupport:
    """Whether a dtype's arithmetic runs in hardware here (``native``), and with what."""

    native: bool
    how: str


def dtype_support(isa: IsaFeatures) -> dict[str, DtypeSupport]:
    """fp32, bf16, fp16 and int8 as this CPU runs them, from its flags.

    Without AVX512-BF16 or AMX (every AVX2-only CPU: AMD Zen 2/3, Intel before Cooper Lake),
    PyTorch converts bf16 to fp32 and back around each operation in software: it runs, many times
    slower than fp32. int8 always has integer dot products on x86 with AVX2 (oneDNN and FBGEMM use
    vpmaddubsw); VNNI (AVX512-VNNI, AVX-VNNI) fuses them into one instruction and AMX-INT8 into
    tiles, so they are named when present."""
    vector = "AVX-512" if isa.avx512 else "AVX2" if isa.avx2 else "SSE"
    if isa.amx:
        bf16 = DtypeSupport(True, "AMX-BF16 tiles" + (" and AVX512-BF16" if isa.avx512_bf16 else ""))
    elif isa.avx512_bf16:
        bf16 = DtypeSupport(True, "AVX512-BF16")
    else:
        bf16 = DtypeSupport(False, "emulated: no AVX512-BF16 or AMX, converted to fp32 in software")
    if isa.amx_fp16:
        fp16 = DtypeSupport(True, "AMX-FP16 tiles")
    elif isa.avx512_fp16:
        fp16 = DtypeSupport(True, "AVX512-FP16")
    else:
        fp16 = DtypeSupport(False, "emulated: no AVX512-FP16 or AMX-FP16")
    if isa.amx_int8:
        int8 = DtypeSupport(True, "AMX-INT8 tiles")
    elif isa.avx512_vnni or isa.avx_vnni:
        int8 = DtypeSupport(True, "AVX512-VNNI" if isa.avx512_vnni else "AVX-VNNI")
    elif isa.avx2 or isa.avx512:
        int8 = DtypeSupport(True, f"{vector} integer dot products (no VNNI)")
    else:
        int8 = DtypeSupport(False, "no AVX2: no fast integer dot products")
    return {"fp32": DtypeSupport(True, vector), "bf16": bf16, "fp16": fp16, "int8": int8}


def emulated_note(dtype: str, isa: IsaFeatures) -> str | None:
    """A sentence for a user who asked for ``dtype`` on a CPU that emulates it; None when native."""
    support = dtype_support(isa).get(dtype)
    if support is None or support.native:
        return None
    natives = [name for name, item in dtype_support(isa).items() if item.native and name != "fp32"]
    return (f"{dtype} is {support.how} on this CPU ({isa.model or 'unknown model'}), so it runs several times "
            f"slower than fp32 here; native here: fp32{''.join(', ' + name for name in natives)}")


def read_isa(root: str | None = None) -> IsaFeatures:
    """The features under ``root``; default ``$LAUNCHKIT_TOPOLOGY_ROOT`` (a recorded machine) or ``/``."""
    root = root or os.environ.get("LAUNCHKIT_TOPOLOGY_ROOT") or "/"
    path = Path(root) / "proc/cpuinfo"
    flags, vendor, model = parse_cpuinfo(path)
    if flags:
        return features(flags, vendor, model, "proc/cpuinfo")
    if Path(root).resolve() == Path("/"):
        try:
            import cpuinfo  # py-cpuinfo

            info = cpuinfo.get_cpu_info()
            return features(set(info.get("flags", [])), info.get("vendor_id_raw"), info.get("brand_raw"), "py-cpuinfo")
        except Exception:  # noqa: BLE001 - py-cpuinfo raises many things on odd platforms
            pass
    return features(set(), vendor, model, "unknown (no flags in proc/cpuinfo)")


def parse_cpuinfo(path: Path) -> tuple[set[str], str | None, str | None]:
    """(flags, vendor, model name) of the first processor block; empty when unreadable."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return set(), None, None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:
                break  # the first processor block is enough
            continue
        fields.setdefault(key.strip(), value.strip())
    return set(fields.get("flags", "").split()), fields.get("vendor_id"), fields.get("model name")


def features(flags: set[str], vendor: str | None, model: str | None, source: str) -> IsaFeatures:
    return IsaFeatures(
        vendor=vendor,
        model=model,
        avx2="avx2" in flags,
        avx512="avx512f" in flags,
        avx512_vnni=bool(flags & {"avx512_vnni", "avx512vnni"}),
        avx512_bf16="avx512_bf16" in flags,
        amx="amx_tile" in flags and "amx_bf16" in flags,
        amx_int8="amx_tile" in flags and "amx_int8" in flags,
        source=source,
        avx_vnni="avx_vnni" in flags,
        avx512_fp16="avx512_fp16" in flags,
        amx_fp16="amx_tile" in flags and "amx_fp16" in flags,
    )
