"""The models a server holds: name → version → ServedModel, and which version is the default."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launchkit.archive.manifest import Manifest
from launchkit.core.errors import Conflict, ModelNotFound, VersionNotFound
from launchkit.serve.scheduling.batcher import ModelQueue
from launchkit.serve.scheduling.model_metrics import ModelMetrics
from launchkit.serve.settings import ModelSettings
from launchkit.serve.tensors import ModelTensors


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
    max_workers: int | None = None
    loaded_at_startup: bool = True
    url: str = ""  # what it was registered from
    metrics: ModelMetrics | None = None  # when the server keeps metrics
    owns_dir: bool = True  # model_dir was extracted by the server (False: an operator's folder, used in place)
    tensors: ModelTensors | None = None  # v2 metadata: declared in model-config.yaml, or learned from a request
    handler: str = ""  # the handler workers run: the manifest's, or handler= at registration

    @property
    def key(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def ready(self) -> bool:
        """At least one worker takes new batches."""
        return any(worker.ready for worker in self.workers)

    @property
    def failure(self) -> str | None:
        """Why the model is failed (a worker could not load it max_load_failures times in a row), or None."""
        if self.ready:
            return None
        return next((worker.last_error for worker in self.workers if worker.failed_to_load), None)


@dataclass
class Registry:
    models: dict[str, dict[str, ServedModel]] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)
    removed: list[ServedModel] = field(default_factory=list)  # unregistered, still draining

    def add(self, model: ServedModel) -> None:
        versions = self.models.setdefault(model.name, {})
        if model.version in versions:
            raise Conflict(f'model "{model.name}" version {model.version} is already registered; unregister it '
                           "first or register under another model_name")
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
            raise VersionNotFound(f'model "{name}" has no version "{version}"; versions: {", ".join(sorted(versions))}')
        return versions[version]

    def remove(self, name: str, version: str | None = None) -> ServedModel:
        """Stop routing to a version. The default version goes last: set another default first."""
        model = self.find(name, version)
        versions = self.models[name]
        if model.version == self.defaults[name] and len(versions) > 1:
            others = ", ".join(sorted(v for v in versions if v != model.version))
            raise Conflict(
                f'version {model.version} is the default of model "{name}" and other versions are loaded '
                f"({others}): make one of them the default first (PUT /models/{name}/VERSION/set-default)"
            )
        del versions[model.version]
        if not versions:
            del self.models[name]
            del self.defaults[name]
        self.removed.append(model)
        return model

    def discard(self, model: ServedModel) -> None:
        """Undo an ``add`` whose workers could not be planned (nothing ran, nothing to drain)."""
        versions = self.models.get(model.name, {})
        if versions.get(model.version) is model:
            del versions[model.version]
            if not versions:
                del self.models[model.name]
                del self.defaults[model.name]
            elif self.defaults[model.name] == model.version:
                self.defaults[model.name] = next(iter(versions))

    def set_default(self, name: str, version: str) -> ServedModel:
        model = self.find(name, version)
        self.defaults[name] = version
        return model

    def all(self) -> list[ServedModel]:
        return [model for versions in self.models.values() for model in versions.values()]

    def all_ready(self) -> bool:
        """Every model has a ready worker (true for a server holding no model: it is ready to register one)."""
        return all(model.ready for model in self.all())

    def failures(self) -> dict[str, str]:
        """Failed models, ``name/version`` → reason."""
        return {model.key: failure for model in self.all() if (failure := model.failure)}
