"""tune's optimization variants follow what the CPU runs natively."""

from __future__ import annotations

import logging

import pytest

from launchkit.core import isa as isa_module
from launchkit.core.isa import features
from launchkit.tune.runner import TuneRequest, wanted_variants
from launchkit.tune.search import Constraints


@pytest.mark.parametrize("flags, expected", [
    ({"avx2", "fma"}, ["original"]),  # Zen 3: bf16 emulated, left out
    ({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}, ["original", "bf16"]),  # Zen 4
    ({"avx2", "avx512f", "amx_tile", "amx_bf16", "amx_int8"}, ["original", "bf16"]),  # Sapphire Rapids
])
def test_emulated_bf16_is_left_out_and_said(monkeypatch, caplog, flags, expected):
    monkeypatch.setattr(isa_module, "read_isa", lambda root=None: features(flags, "x", "Test CPU", "test"))
    with caplog.at_level(logging.WARNING, logger="launchkit.tune.runner"):
        assert wanted_variants(TuneRequest(None, Constraints())) == expected
    said = [record.getMessage() for record in caplog.records if "left out" in record.getMessage()]
    assert bool(said) == (expected == ["original"])


def test_a_named_variant_is_tried_even_where_emulated(monkeypatch):
    monkeypatch.setattr(isa_module, "read_isa", lambda root=None: features({"avx2"}, "x", "Test CPU", "test"))
    assert wanted_variants(TuneRequest(None, Constraints(), space="variant=original,bf16")) == ["original", "bf16"]
