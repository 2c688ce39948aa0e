"""Writing archives: ``launchkit archive`` (torch-model-archiver's flags and layout), and a copy
of an archive with settings added to its model-config.yaml (``launchkit optimize``'s artifact)."""

from __future__ import annotations

import json
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launchkit import __version__
from launchkit.archive.handlers import check_handler
from launchkit.archive.manifest import MANIFEST, Manifest, read_manifest
from launchkit.core.errors import UsageError

FORMATS = ("default", "zip-store", "no-archive")


@dataclass(frozen=True)
class ArchiveRequest:
    """What ``launchkit archive`` was asked for (torch-model-archiver's flags)."""

    model_name: str
    version: str
    handler: str
    serialized_file: str | None = None
    model_file: str | None = None
    extra_files: tuple[str, ...] = field(default=())
    export_path: str = "."
    config_file: str | None = None
    requirements_file: str | None = None
    archive_format: str = "default"
    force: bool = False
    runtime: str = "python"


def create_archive(request: ArchiveRequest) -> Path:
    """Write ``<export_path>/<model_name>.mar`` (or a directory for no-archive); return its path."""
    if request.archive_format not in FORMATS:
        raise UsageError(f"--archive-format {request.archive_format!r}: expected one of {', '.join(FORMATS)}")
    if not request.model_name or "/" in request.model_name:
        raise UsageError(f"--model-name {request.model_name!r}: a plain name is required (no slashes)")
    files: dict[str, Path] = {}

    def add(path_text: str | None, flag: str) -> str | None:
        if not path_text:
            return None
        path = Path(path_text)
        if not path.exists():
            raise UsageError(f"{flag} {path_text}: no such file")
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file():
                    files[child.relative_to(path).as_posix()] = child
            return path.name
        files[path.name] = path
        return path.name

    handler = request.handler
    handler_path, _, function = handler.partition(":")
    if handler_path.endswith(".py") or "/" in handler_path or Path(handler_path).is_file():
        handler_file = add(handler_path, "--handler")  # FILE.py[:FUNCTION]: the file goes into the archive
        assert handler_file is not None  # handler_path is not empty
        handler = handler_file + (f":{function}" if function else "")
    serialized = add(request.serialized_file, "--serialized-file")
    model_file = add(request.model_file, "--model-file")
    config = add(request.config_file, "--config-file")
    requirements = add(request.requirements_file, "--requirements-file")
    for extra in request.extra_files:
        add(extra, "--extra-files")
    check_handler(handler, files.__contains__, "--handler")  # a default handler, or a module among the files
    manifest = Manifest(
        model_name=request.model_name,
        version=request.version,
        handler=handler,
        serialized_file=serialized,
        model_file=model_file,
        requirements_file=requirements,
        config_file=config,
        runtime=request.runtime,
        created_on=time.strftime("%d/%m/%Y %H:%M:%S"),
        archiver_version=f"launchkit-{__version__}",
    )
    export = Path(request.export_path)
    if not export.is_dir():
        raise UsageError(f"--export-path {export}: no such directory")
    target = export / (request.model_name if request.archive_format == "no-archive" else f"{request.model_name}.mar")
    if target.exists():
        if not request.force:
            raise UsageError(f"{target} already exists; use -f/--force to overwrite it")
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    manifest_bytes = json.dumps(manifest.to_json(), indent=2).encode()
    if request.archive_format == "no-archive":
        (target / "MAR-INF").mkdir(parents=True)
        (target / MANIFEST).write_bytes(manifest_bytes)
        for name, source in files.items():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
        return target
    compression = zipfile.ZIP_STORED if request.archive_format == "zip-store" else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(target, "w", compression) as archive:
        archive.writestr(MANIFEST, manifest_bytes)
        for name, source in files.items():
            archive.write(source, name)
    return target


def copy_with_config(archive: Path, output: Path, settings: dict[str, Any], serialized: Path | None = None) -> Path:
    """Copy the .mar ``archive`` to ``output`` with ``settings`` set in its model-config.yaml
    (created and named in the manifest if the archive has none). ``serialized``: a model to ship
    instead of the archive's (a quantized TorchScript graph): it becomes the serializedFile, and the
    eager modelFile and its weights are left out."""
    import yaml

    manifest = read_manifest(archive)
    raw = json.loads(json.dumps(manifest.raw))  # a copy to edit
    config_name = manifest.config_file or "model-config.yaml"
    model = raw.setdefault("model", {})
    model["configFile"] = config_name
    replaced = {config_name, MANIFEST}
    if serialized is not None:
        replaced |= {name for name in (manifest.model_file, manifest.serialized_file) if name}
        model.pop("modelFile", None)
        model["serializedFile"] = serialized.name
    with zipfile.ZipFile(archive) as bundle:
        config = yaml.safe_load(bundle.read(config_name)) if config_name in bundle.namelist() else {}
        config = {**(config or {}), **settings}
        temporary = output.with_suffix(".partial")
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as out:
            for item in bundle.infolist():
                if item.filename in replaced:
                    continue
                out.writestr(item, bundle.read(item.filename))
            if serialized is not None:
                out.write(serialized, serialized.name)
            out.writestr(config_name, yaml.safe_dump(config, sort_keys=False))
            out.writestr(MANIFEST, json.dumps(raw, indent=2))
    shutil.move(str(temporary), output)
    return output
