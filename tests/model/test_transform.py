"""The native transforms (model/transform.py): bf16, channels-last, TorchScript, int8, ipex_enable."""

from __future__ import annotations

import torch

from launchkit.model.spec import OptimizationSpec, parse_spec
from launchkit.model.transform import optimize_model


def test_bf16_channels_last_torchscript_keeps_resnet_top1():
    from launchkit.examples.resnet import resnet18

    inputs = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    reference = resnet18()(inputs).detach()
    optimized = optimize_model(resnet18(), parse_spec("bf16,channels_last,torchscript"), lambda: (inputs[:2],))
    assert optimized.traced is not None and optimized.notes == []
    output = optimized(inputs)
    assert output.dtype == torch.float32
    assert torch.equal(output.argmax(1), reference.argmax(1))
    assert torch.nn.functional.cosine_similarity(output, reference).min() > 0.999
    assert optimized.description.startswith("bf16")


def test_int8_quantizes_linear_layers_and_torchscript_is_not_retraced():
    from launchkit.examples.tiny import tiny_mlp

    inputs = torch.randn(64, 64, generator=torch.Generator().manual_seed(1))
    reference = tiny_mlp()(inputs).detach()
    quantized = optimize_model(tiny_mlp(), parse_spec("int8"))
    linears = [type(module).__module__ for module in quantized.model.modules() if type(module).__name__ == "Linear"]
    assert linears == ["torch.ao.nn.quantized.dynamic.modules.linear"] * 3  # all three Linear layers
    output = quantized(inputs)
    assert not torch.equal(output, reference)  # it really ran in int8...
    assert torch.nn.functional.cosine_similarity(output, reference).min() > 0.99  # ...and stayed close
    scripted = torch.jit.trace(tiny_mlp(), torch.zeros(1, 64))
    kept = optimize_model(scripted, parse_spec("int8,torchscript"))
    assert any("int8 needs an eager model" in note for note in kept.notes)
    assert any("not re-traced" in note for note in kept.notes)
    assert torch.equal(kept(inputs), scripted(inputs))  # kept as it was: fp32, the same numbers


def test_ipex_enable_without_ipex_runs_the_native_path_and_says_so():
    from launchkit.examples.tiny import tiny_mlp
    from launchkit.serve.settings import config_from_properties, model_settings

    settings = model_settings(config_from_properties({"ipex_enable": "true"}, "test"), "m", "1.0", {})
    assert settings.optimization == OptimizationSpec("fp32", True, "torchscript", ipex=True)
    optimized = optimize_model(tiny_mlp(), settings.optimization, lambda: (torch.zeros(2, 64),))
    assert any("intel_extension_for_pytorch is not importable: the native path runs" in note
               for note in optimized.notes), optimized.notes  # IPEX cannot be installed beside torch 2.13
    assert optimized.traced is not None and optimized(torch.zeros(3, 64)).shape == (3, 10)
    # an archive's own choice keeps the server-wide ipex flag
    chosen = model_settings(config_from_properties({"ipex_enable": "true"}, "test"),
        "m", "1.0", {"optimization": {"dtype": "bf16"}})
    assert chosen.optimization.dtype == "bf16" and chosen.optimization.ipex
