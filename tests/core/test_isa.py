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


ZEN3 = "fpu sse2 avx avx2 fma vaes vpclmulqdq"  # AVX2 only: EPYC Milan
ZEN4 = "fpu sse2 avx avx2 avx512f avx512bw avx512_vnni avx512_bf16 avx512vl"  # EPYC Genoa: BF16, no AMX
GRANITE_RAPIDS = SAPPHIRE_RAPIDS + " avx512_fp16 amx_fp16 avx_vnni"


@pytest.mark.parametrize("flags, native, int8", [
    (SAPPHIRE_RAPIDS, {"fp32", "bf16", "int8"}, "AMX-INT8 tiles"),
    (GRANITE_RAPIDS, {"fp32", "bf16", "fp16", "int8"}, "AMX-INT8 tiles"),
    (ICE_LAKE, {"fp32", "int8"}, "AVX512-VNNI"),
    (ZEN3, {"fp32", "int8"}, "AVX2 integer dot products (no VNNI)"),
    (ZEN4, {"fp32", "bf16", "int8"}, "AVX512-VNNI"),
    ("fpu sse2", {"fp32"}, "no AVX2: no fast integer dot products"),
])
def test_which_dtypes_run_natively(tmp_path, flags, native, int8):
    from launchkit.core.isa import dtype_support, emulated_note

    isa = read_isa(_root(tmp_path, flags))
    support = dtype_support(isa)
    assert {name for name, item in support.items() if item.native} == native
    assert support["int8"].how == int8
    assert (emulated_note("bf16", isa) is None) == ("bf16" in native)
    if "bf16" not in native:
        assert "emulated" in emulated_note("bf16", isa)
        assert ("int8" in emulated_note("bf16", isa)) == ("int8" in native)  # what to use instead
    assert isa.to_dict()["dtypes"]["bf16"]["native"] == ("bf16" in native)


def test_info_says_which_dtypes_are_emulated(tmp_path):
    import json
    import subprocess
    import sys

    import shutil

    machine = tmp_path / "machine"
    shutil.copytree(Path(__file__).parents[1] / "fixtures" / "machines" / "desktop-4c-adjacent", machine)
    (machine / "proc").mkdir(exist_ok=True)
    (machine / "proc" / "cpuinfo").write_text(f"processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: {ZEN3}\n")
    root = str(machine)
    result = subprocess.run([sys.executable, "-m", "launchkit", "info", "--json", "--topology-root", root],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    dtypes = json.loads(result.stdout)["isa"]["dtypes"]
    assert dtypes["bf16"] == {"native": False, "how": "emulated: no AVX512-BF16 or AMX, converted to fp32 in software"}
    assert dtypes["int8"]["native"] and dtypes["fp32"] == {"native": True, "how": "AVX2"}
