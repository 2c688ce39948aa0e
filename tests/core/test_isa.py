"""ISA detection from proc/cpuinfo: hand-written texts with known answers, and the live machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from launchkit.core.isa import read_isa

SAPPHIRE_RAPIDS = "fpu sse2 avx avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8"
ICE_LAKE = "fpu sse2 avx avx2 avx512f avx512bw avx512_vnni"
COOPER_LAKE = "fpu sse2 avx avx2 avx512f avx512_vnni avx512_bf16"  # BF16 instructions, no AMX
ZEN2 = "fpu sse2 avx avx2 fma"
TILES_WITHOUT_BF16 = "avx2 avx512f amx_tile amx_int8"  # a made-up part: AMX, but no BF16 tiles


def _root(tmp_path: Path, flags: str, extra_block: str = "") -> str:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text(
        f"processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU @ 2.0GHz\nflags\t\t: {flags}\n\n"
        + extra_block)
    return str(tmp_path)


@pytest.mark.parametrize("flags, expected", [
    (SAPPHIRE_RAPIDS, dict(avx2=True, avx512=True, avx512_vnni=True, avx512_bf16=True, amx=True, amx_int8=True)),
    (ICE_LAKE, dict(avx2=True, avx512=True, avx512_vnni=True, avx512_bf16=False, amx=False, amx_int8=False)),
    (COOPER_LAKE, dict(avx2=True, avx512=True, avx512_vnni=True, avx512_bf16=True, amx=False, amx_int8=False)),
    (ZEN2, dict(avx2=True, avx512=False, avx512_vnni=False, avx512_bf16=False, amx=False, amx_int8=False)),
    (TILES_WITHOUT_BF16, dict(avx2=True, avx512=True, avx512_vnni=False, avx512_bf16=False, amx=False,
                              amx_int8=True)),
    ("", dict(avx2=False, avx512=False, avx512_vnni=False, avx512_bf16=False, amx=False, amx_int8=False)),
])
def test_features_from_recorded_flags(tmp_path, flags, expected):
    isa = read_isa(_root(tmp_path, flags))
    assert {key: getattr(isa, key) for key in expected} == expected
    assert isa.vendor == "GenuineIntel" and isa.model == "Test CPU @ 2.0GHz"


def test_only_the_first_processor_block_counts(tmp_path):
    second = f"processor\t: 1\nvendor_id\t: Other\nflags\t\t: {SAPPHIRE_RAPIDS}\n"
    isa = read_isa(_root(tmp_path, ZEN2, second))
    assert isa.avx2 and not isa.avx512 and isa.vendor == "GenuineIntel"


def test_avx512_means_the_foundation_not_any_avx512_flag(tmp_path):
    assert not read_isa(_root(tmp_path, "avx2 avx512bw avx512_vnni")).avx512


def test_the_live_machine_agrees_with_its_cpuinfo():
    first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    flags = next(line.split(":", 1)[1].split() for line in first.splitlines() if line.startswith("flags"))
    isa = read_isa("/")
    assert isa.source == "proc/cpuinfo"
    assert (isa.avx2, isa.avx512, isa.amx) == ("avx2" in flags, "avx512f" in flags,
                                               "amx_tile" in flags and "amx_bf16" in flags)
