"""Loading the model an archive holds, the way TorchServe's BaseHandler does: an eager
``modelFile`` (exactly one ``nn.Module`` class) plus a state dict, or a TorchScript
``serializedFile``. Needs torch."""

from __future__ import annotations

import importlib.util
import inspect
import sys
import types
from pathlib import Path
from typing import Any


def load_files(model_dir: Path, model_file: str | None, serialized: str | None) -> Any:
    """The archive's model in eval mode: eager ``model_file`` (+ state dict) or TorchScript ``serialized``."""
    import torch

    if model_file:
        model = _load_eager(model_dir / model_file, model_dir / serialized if serialized else None)
    elif serialized:
        model = _load_torchscript(model_dir / serialized)
    else:
        raise RuntimeError("the manifest names neither serializedFile nor modelFile: nothing to load")
    return model.eval()


def _load_torchscript(path: Path) -> Any:
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as error:
        text = str(error)
        if "ipex" in text.lower():  # ipex_prepack::, torch_ipex::: operators only IPEX registers
            missing = next((word.strip("'\",.") for word in text.split() if "ipex" in word.lower()), "IPEX's operators")
            raise RuntimeError(
                f"{path.name} is TorchScript made with Intel Extension for PyTorch: it calls {missing}, which only "
                "IPEX provides, and IPEX cannot be installed beside this torch. Re-create the model from its eager "
                "form (model.py + weights): launchkit optimize MODEL.mar --dtype int8 -o MODEL-int8.mar "
                "(static int8 without IPEX)") from None
        raise


def load_archived_model(model_dir: Path, manifest: Any) -> Any:
    """The model of an extracted archive (``manifest``: its Manifest), as BaseHandler loads it."""
    return load_files(model_dir, manifest.model_file, manifest.serialized_file)


def _load_eager(model_file: Path, weights: Path | None) -> Any:
    import torch

    module = import_file(model_file, f"launchkit_model_{model_file.stem}")
    classes = [obj for _, obj in inspect.getmembers(module, inspect.isclass)
               if issubclass(obj, torch.nn.Module) and obj.__module__ == module.__name__]
    if len(classes) != 1:
        raise RuntimeError(f"{model_file.name} must define exactly one torch.nn.Module class, found {len(classes)}")
    model = classes[0]()
    if weights is not None:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model


def import_file(path: Path, name: str) -> types.ModuleType:
    """Import the Python file ``path`` as module ``name`` (registered in sys.modules)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
