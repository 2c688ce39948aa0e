"""Which instruction-set features the CPU has (AVX-512, AMX, ...), from ``proc/cpuinfo``.

The kernel lists in ``/proc/cpuinfo`` the features it found with CPUID and will let programs
use (AMX needs the kernel's permission, so a flag the kernel hides is one PyTorch cannot use
either). Reading it takes microseconds; py-cpuinfo, used before, ran CPUID in a subprocess and
cost ``launchkit info`` about 1.1 s of its 1.3 s. py-cpuinfo remains the fallback where there is
no ``proc/cpuinfo`` to read (not Linux).
"""

from __future__ import annotations

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

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def read_isa(root: str = "/") -> IsaFeatures:
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
    )
