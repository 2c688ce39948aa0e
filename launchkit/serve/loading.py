"""From an archive path to a ServedModel: extract, read the manifest, settle its settings.

Used at start-up (archives the operator named) and by ``POST /models`` (after the URL policy in
:mod:`launchkit.serve.sources` has allowed the archive).
"""

from __future__ import annotations

import functools
import itertools
import logging
import shutil
from pathlib import Path

from launchkit.archive.handlers import check_handler
from launchkit.archive.manifest import check_name, read_manifest
from launchkit.archive.reading import extract_archive, inspect_archive, read_model_config
from launchkit.core.errors import Conflict, UsageError
from launchkit.core.isa import emulated_note, read_isa
from launchkit.serve.scheduling.batcher import ModelQueue
from launchkit.serve.scheduling.model_metrics import KeepsMetrics
from launchkit.serve.scheduling.registry import Registry, ServedModel
from launchkit.serve.settings import ModelOverrides, ModelSource, ServerConfig, model_settings
from launchkit.serve.sources import check_sha256
from launchkit.serve.tensors import declared_tensors

logger = logging.getLogger(__name__)

_folders = itertools.count()


def resolve_sources(config: ServerConfig, paths: list[str], models: list[str]) -> list[ModelSource]:
    """Archives from MODEL arguments, --models (or load_models), relative to the model store."""
    sources = [ModelSource(Path(path)) for path in paths]
    specs = models or list(config.load_models)
    store = config.model_store
    for spec in specs:
        name, _, file = spec.rpartition("=") if "=" in spec else ("", "", spec)
        if file == "all":
            if store is None:
                raise UsageError("--models all needs --model-store (or model_store= in config.properties)")
            sources += [ModelSource(path) for path in sorted(store.glob("*.mar"))]
            continue
        path = Path(file)
        if not path.is_absolute() and store is not None and not path.exists():
            path = store / file
        sources.append(ModelSource(path, name or None))
    return sources


def open_model(archive: Path, workdir: Path, config: ServerConfig, overrides: tuple[ModelOverrides, ...] = (),
               name: str | None = None, sha256: str | None = None, url: str = "",
               metrics: KeepsMetrics | None = None, handler: str | None = None) -> ServedModel:
    """Check, extract and describe one archive; raises ArchiveError or SourceError, and then leaves
    nothing behind (nothing is registered, nothing extracted stays on disk).

    The name comes from the caller or the archive's manifest (read from the zip, not extracted);
    a sha256 pinned for that name in config.properties, or given with the registration, is
    checked on the archive file before anything is extracted. ``overrides``: the command line's
    settings, then the management API's (see serve.settings)."""
    inspect_archive(archive, config.limits.extraction())  # paths, links, sizes: before anything is read from it
    manifest = read_manifest(archive)
    name = check_name(name or manifest.model_name, "model name")
    check_name(manifest.version, "model version")
    pinned = (sha256,) if sha256 else config.pinned_digests(name)
    if pinned:
        check_sha256(archive, *pinned)
    owns_dir = not archive.is_dir()  # a folder archive is the operator's: used in place, never deleted
    model_dir = extract_archive(archive, workdir / f"model-{next(_folders)}", config.limits.extraction())
    try:
        handler = handler or manifest.handler  # handler= at registration beats the manifest's
        check_handler(handler, lambda file: (model_dir / file).is_file(), str(archive))
        archive_config = read_model_config(model_dir, manifest)
        settings = model_settings(config, name, manifest.version, archive_config, overrides)
        max_workers = archive_config.get("maxWorkers")
        model = ServedModel(name, manifest.version, model_dir, archive, manifest, settings,
                            ModelQueue(name, settings.batch_size, settings.max_batch_delay_ms, settings.job_queue_size),
                            url=url or str(archive),
                            max_workers=int(max_workers) if isinstance(max_workers, int) else None, owns_dir=owns_dir,
                            tensors=declared_tensors(archive_config, str(archive)), handler=handler)
    except BaseException:
        if owns_dir:
            shutil.rmtree(model_dir, ignore_errors=True)
        raise
    if metrics is not None:
        attach_metrics(model, metrics)
    _warn_if_emulated(settings.optimization.dtype, name)
    return model


@functools.lru_cache(maxsize=None)
def _warn_if_emulated(dtype: str, model: str) -> None:
    """Once per model and dtype: a dtype this CPU emulates (bf16 without AVX512-BF16 or AMX)."""
    note = emulated_note(dtype, read_isa())
    if note:
        logger.warning("%s: --optimization %s: %s. Serve fp32 or int8 here, or measure first with "
                       "launchkit optimize --dtype %s", model, dtype, note, dtype)


def discard_files(model: ServedModel) -> None:
    """Remove what the server extracted for ``model`` (never an operator's folder archive)."""
    if model.owns_dir:
        shutil.rmtree(model.model_dir, ignore_errors=True)


def attach_metrics(model: ServedModel, metrics: KeepsMetrics) -> None:
    model.metrics = model_metrics = metrics.for_model(model)
    model.queue.on_dispatch = lambda jobs, now: model_metrics.batch_sent([now - job.arrival for job in jobs])


def load_models(config: ServerConfig, sources: tuple[ModelSource, ...], overrides: ModelOverrides,
                workdir: Path) -> Registry:
    registry = Registry()
    for source in sources:
        try:
            model = open_model(source.path, workdir, config, (overrides,), source.name)
        except UsageError as error:
            raise UsageError(f"cannot load {source.path}: {error}") from None
        try:
            registry.add(model)
        except Conflict as error:
            raise UsageError(str(error)) from None
    return registry  # may be empty: models come later, through POST /models
