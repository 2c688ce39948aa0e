"""The models a server holds: name → version → ServedModel, and which version is the default."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launchkit.serve.archive import Manifest
from launchkit.serve.batcher import ModelQueue
from launchkit.serve.config import ModelSettings


class ModelNotFound(Exception):
    def __init__(self, message: str, kind: str = "ModelNotFoundException") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class ServedModel:
    name: str
    version: str
    model_dir: Path
    archive: Path
    manifest: Manifest
    settings: ModelSettings
    queue: ModelQueue
    workers: list[Any] = field(default_factory=list)  # WorkerProcess

    @property
    def ready(self) -> bool:
        return self.queue.ready_workers > 0


@dataclass
class Registry:
    models: dict[str, dict[str, ServedModel]] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)

    def add(self, model: ServedModel) -> None:
        versions = self.models.setdefault(model.name, {})
        if model.version in versions:
            raise ValueError(f"model {model.name} version {model.version} is loaded twice")
        versions[model.version] = model
        self.defaults.setdefault(model.name, model.version)

    def find(self, name: str, version: str | None = None) -> ServedModel:
        versions = self.models.get(name)
        if versions is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f'model "{name}" is not loaded; loaded models: {known}')
        if version is None:
            return versions[self.defaults[name]]
        if version not in versions:
            raise ModelNotFound(
                f'model "{name}" has no version "{version}"; versions: {", ".join(sorted(versions))}',
                "ModelVersionNotFoundException",
            )
        return versions[version]

    def all(self) -> list[ServedModel]:
        return [model for versions in self.models.values() for model in versions.values()]

    def all_ready(self) -> bool:
        return bool(self.models) and all(model.ready for model in self.all())
