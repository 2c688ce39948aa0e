"""Static int8 (calibrated, convolutions and Linear): on real digits, gated, written, served."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from launchkit.model.spec import parse_spec
from launchkit.model.transform import optimize_model
from launchkit.optimize.command import OptimizeRequest, run_optimize
from tests.serve.conftest import Server, free_port


def launchkit(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "launchkit", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def mnist_archive(tmp_path_factory) -> Path:
    from launchkit.examples.build import build_example

    return build_example("mnist", str(tmp_path_factory.mktemp("mnist")))


def test_static_int8_keeps_the_digits_label_accuracy(mnist_archive):
    request = OptimizeRequest(parse_spec("int8,torchscript"), target=str(mnist_archive), batch_sizes=(8,),
                              seconds=0.3, samples=1000)
    result = run_optimize(request)
    assert "static" in result.path and "calibrated on 256 inputs" in result.path
    assert result.labels["samples"] == 1000 and result.labels["original"] > 0.95  # a real model, real digits
    assert result.labels["drop_points"] <= 0.5
    assert result.agreement["top1_agreement"] >= 0.98 and result.accepted


def test_an_int8_archive_is_written_gated_and_served(mnist_archive, tmp_path):
    refused = tmp_path / "refused.mar"
    result = launchkit("optimize", str(mnist_archive), "--dtype", "int8", "--no-channels-last", "--seconds", "0.3",
                       "--batch-sizes", "8", "--min-top1-agreement", "1.0", "-o", str(refused))
    assert result.returncode == 4 and not refused.exists() and "not written" in result.stderr
    written = tmp_path / "mnist-int8.mar"
    result = launchkit("optimize", str(mnist_archive), "--dtype", "int8", "--no-channels-last", "--seconds", "0.3",
                       "--batch-sizes", "8", "-o", str(written))
    assert result.returncode == 0, result.stderr
    assert "label accuracy on 1000 held-out" in result.stdout and written.exists()
    with Server([str(written)], free_port()) as server:
        from zipfile import ZipFile

        sample = ZipFile(mnist_archive).read("sample.png")
        status, _, digit = server.predict("mnist", sample)
        assert status == 200 and digit == 0  # the first held-out digit is a 0
        status, [described] = server.manage("GET", "/models/mnist")
        assert "static int8" in described["optimization"]


def test_calibration_inputs_are_checked_before_anything_runs(mnist_archive, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    result = launchkit("optimize", str(mnist_archive), "--dtype", "int8", "--calibration", str(images))
    assert result.returncode == 2 and "no images" in result.stderr
    result = launchkit("optimize", str(mnist_archive), "--dtype", "int8", "--calibration", str(tmp_path / "nope"))
    assert result.returncode == 2 and "no such file" in result.stderr
    tensors = tmp_path / "digits.pt"
    torch.save(torch.rand(32, 1, 28, 28), tensors)
    result = launchkit("optimize", str(mnist_archive), "--dtype", "int8", "--no-channels-last", "--seconds", "0.2",
                       "--batch-sizes", "8", "--calibration", str(tensors), "--force")
    assert result.returncode == 0 and "32 inputs from" in result.stderr


def test_a_model_fx_cannot_capture_falls_back_to_dynamic_int8():
    class Branchy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot capture it
                return self.linear(x)
            return -self.linear(x)

    model = optimize_model(Branchy().eval(), parse_spec("int8"), lambda: (torch.rand(2, 8),))
    assert "dynamic int8 of Linear layers instead" in model.description
    assert model(torch.rand(3, 8)).shape == (3, 4)


IPEX_MADE = """
    import sys
    import torch

    library = torch.library.Library("ipex_prepack", "DEF")
    library.define("linear_run(Tensor x) -> Tensor")
    library.impl("linear_run", lambda x: x * 2, "CPU")


    class Prepacked(torch.nn.Module):
        def forward(self, x):
            return torch.ops.ipex_prepack.linear_run(x)


    torch.jit.script(Prepacked()).save(sys.argv[1])
"""


def test_a_torchscript_made_with_ipex_names_what_is_missing(tmp_path):
    maker = tmp_path / "make.py"
    maker.write_text(textwrap.dedent(IPEX_MADE))
    subprocess.run([sys.executable, str(maker), str(tmp_path / "model.pt")], check=True, timeout=120)
    code = f"from pathlib import Path; from launchkit.model.loading import load_files; load_files(Path({str(tmp_path)!r}), None, 'model.pt')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    message = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0 and "Intel Extension for PyTorch" in message and "ipex_prepack" in message
    assert "launchkit optimize" in message
