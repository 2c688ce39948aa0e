"""The optimization spec (model/spec.py): its spellings and its errors. Pure."""

from __future__ import annotations

import pytest

from launchkit.core.errors import SpecError
from launchkit.model.spec import OptimizationSpec, parse_spec


def test_spec_spellings_agree():
    expected = OptimizationSpec("bf16", True, "torchscript")
    assert parse_spec({"dtype": "bf16", "channels_last": True, "graph": "torchscript"}) == expected
    assert parse_spec("dtype=bf16,channels_last=true,graph=torchscript") == expected
    assert parse_spec("bf16,channels-last,jit") == expected
    assert parse_spec(None).is_identity and parse_spec("").is_identity
    assert parse_spec({"dtype": "bfloat16"}).dtype == "bf16"
    assert "channels-last" in expected.describe() and "TorchScript" in expected.describe()


@pytest.mark.parametrize("value,message", [
    ({"dtype": "fp16"}, "dtype='fp16'"), ({"graph": "xla"}, "graph='xla'"), ({"speed": 1}, "unknown key"),
    ("bf16,turbo", "'turbo'"), ({"channels_last": "maybe"}, "true or false"), (42, "expected a mapping"),
])
def test_bad_specs_say_what_is_wrong(value, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(value)
