"""`launchkit serve --optimization bf16` on a CPU that emulates bf16: one warning per model, at load."""

from __future__ import annotations

import logging

from launchkit.core.isa import features
from launchkit.serve import loading


def test_an_emulated_dtype_warns_once_per_model(monkeypatch, caplog):
    zen3 = features({"avx2", "fma"}, "AuthenticAMD", "AMD EPYC 7763", "test")
    monkeypatch.setattr(loading, "read_isa", lambda: zen3)
    loading._warn_if_emulated.cache_clear()
    with caplog.at_level(logging.WARNING, logger="launchkit.serve.loading"):
        for _ in range(3):  # loaded again (a new version, a restart of its workers): still one warning
            loading._warn_if_emulated("bf16", "resnet18")
        loading._warn_if_emulated("fp32", "resnet18")
        loading._warn_if_emulated("int8", "resnet18")
        loading._warn_if_emulated("bf16", "minilm")
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 2 and all("bf16 is emulated" in w and "AMD EPYC 7763" in w for w in warnings)
    assert warnings[0].startswith("resnet18:") and warnings[1].startswith("minilm:")


def test_a_native_dtype_says_nothing(monkeypatch, caplog):
    sapphire = features({"avx2", "avx512f", "amx_tile", "amx_bf16", "amx_int8"}, "GenuineIntel", "Xeon", "test")
    monkeypatch.setattr(loading, "read_isa", lambda: sapphire)
    loading._warn_if_emulated.cache_clear()
    with caplog.at_level(logging.WARNING, logger="launchkit.serve.loading"):
        loading._warn_if_emulated("bf16", "resnet18")
    assert not caplog.records
