"""Which instruction-set features the CPU has (AVX-512, AMX, ...).

The live machine is asked through py-cpuinfo, which runs CPUID itself and so also sees
features a VM's /proc/cpuinfo may not list. It costs about a second, so only `launchkit info`
calls it; recorded machines are read from their ``proc/cpuinfo``.
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


def read_isa(root: str = "/", *, use_cpuinfo: bool = True) -> IsaFeatures:
    if Path(root).resolve() == Path("/") and use_cpuinfo:
        try:
            import cpuinfo  # py-cpuinfo

            info = cpuinfo.get_cpu_info()
            return _features(set(info.get("flags", [])), info.get("vendor_id_raw"), info.get("brand_raw"), "py-cpuinfo")
        except Exception:  # noqa: BLE001 - py-cpuinfo raises many things on odd platforms
            pass
    flags, vendor, model = _proc_cpuinfo(Path(root) / "proc/cpuinfo")
    return _features(flags, vendor, model, "proc/cpuinfo" if flags else "unknown (no proc/cpuinfo)")


def _proc_cpuinfo(path: Path) -> tuple[set[str], str | None, str | None]:
    try:
        text = path.read_text()
    except OSError:
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


def _features(flags: set[str], vendor: str | None, model: str | None, source: str) -> IsaFeatures:
    return IsaFeatures(
        vendor=vendor,
        model=model,
        avx2="avx2" in flags,
        avx512="avx512f" in flags,
        avx512_vnni=bool(flags & {"avx512_vnni", "avx512vnni"}),
        avx512_bf16="avx512_bf16" in flags,
        amx="amx_tile" in flags and "amx_bf16" in flags,
        amx_int8="amx_int8" in flags,
        source=source,
    )
