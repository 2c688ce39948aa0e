"""Build the bundled example archives: ``launchkit archive --example NAME``.

    python -m launchkit.examples.build --export-path DIR [NAME ...]

Models are saved as frozen TorchScript (traced), so the archive needs no model.py and loads fast.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from launchkit.serve.archive import ArchiveRequest, create_archive

HERE = Path(__file__).parent
EXAMPLES = ("tiny", "resnet18")


def build_example(name: str, export_path: str, force: bool = True) -> Path:
    import torch

    if name not in EXAMPLES:
        from launchkit.errors import UsageError

        raise UsageError(f"unknown example {name!r}; bundled examples: {', '.join(EXAMPLES)}")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        extra: tuple[str, ...] = ()
        if name == "tiny":
            from launchkit.examples.tiny import INPUTS, tiny_mlp

            model, example, handler = tiny_mlp(), torch.zeros(1, INPUTS), HERE / "tiny_handler.py"
        else:
            from launchkit.examples.resnet import resnet18

            model, example, handler = resnet18(), torch.zeros(1, 3, 224, 224), HERE / "resnet_handler.py"
            labels = folder / "index_to_name.json"
            labels.write_text(json.dumps({str(i): f"class_{i}" for i in range(1000)}))
            extra = (str(labels),)
        # Traced and frozen (BatchNorm folded into convolutions, weights as constants): what a
        # careful user ships, and what TorchServe's examples recommend for CPU inference.
        with torch.no_grad():
            traced = torch.jit.freeze(torch.jit.trace(model, example))
        serialized = folder / f"{name}.pt"
        traced.save(str(serialized))
        return create_archive(ArchiveRequest(
            model_name=name, version="1.0", handler=str(handler), serialized_file=str(serialized),
            extra_files=extra, export_path=export_path, force=force,
        ))


def main() -> None:
    parser = argparse.ArgumentParser(prog="launchkit.examples.build")
    parser.add_argument("--export-path", default=".")
    parser.add_argument("names", nargs="*", default=list(EXAMPLES))
    args = parser.parse_args()
    for name in args.names:
        print(build_example(name, args.export_path))


if __name__ == "__main__":
    main()
