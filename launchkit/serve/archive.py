"""Model archives (.mar): the layout torch-model-archiver writes, read and written here.

A .mar is a zip of the model's files, flattened at the root, plus ``MAR-INF/MANIFEST.json``.
``no-archive`` is the same tree as a directory. Extraction refuses absolute paths, ``..`` and
links: a .mar comes from somewhere else, and zip-slip would let it write anywhere.
"""

from __future__ import annotations

import json
import shutil
import stat
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from launchkit import __version__
from launchkit.errors import LaunchkitError, UsageError

MANIFEST = "MAR-INF/MANIFEST.json"
FORMATS = ("default", "zip-store", "no-archive")


class ArchiveError(LaunchkitError):
    """An archive that cannot be used; the message says what is wrong with it."""

    exit_code = 2


@dataclass(frozen=True)
class Manifest:
    model_name: str
    version: str
    handler: str
    serialized_file: str | None = None
    model_file: str | None = None
    extensions: str | None = None
    requirements_file: str | None = None
    config_file: str | None = None
    runtime: str = "python"
    created_on: str = ""
    archiver_version: str = ""

    def to_json(self) -> dict[str, Any]:
        model = {"modelName": self.model_name, "modelVersion": self.version, "handler": self.handler}
        for key, value in (("serializedFile", self.serialized_file), ("modelFile", self.model_file),
                           ("extensions", self.extensions), ("requirementsFile", self.requirements_file),
                           ("configFile", self.config_file)):
            if value:
                model[key] = value
        return {"createdOn": self.created_on, "runtime": self.runtime, "model": model,
                "archiverVersion": self.archiver_version}

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str) -> Manifest:
        model = data.get("model")
        if not isinstance(model, dict) or not model.get("modelName") or not model.get("handler"):
            raise ArchiveError(f"{source}: MANIFEST.json needs model.modelName and model.handler")
        return cls(
            model_name=str(model["modelName"]),
            version=str(model.get("modelVersion") or "1.0"),
            handler=str(model["handler"]),
            serialized_file=model.get("serializedFile"),
            model_file=model.get("modelFile"),
            extensions=model.get("extensions"),
            requirements_file=model.get("requirementsFile"),
            config_file=model.get("configFile"),
            runtime=str(data.get("runtime", "python")),
            created_on=str(data.get("createdOn", "")),
            archiver_version=str(data.get("archiverVersion", "")),
        )


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
    if handler.endswith(".py") or "/" in handler or Path(handler).is_file():
        handler_file = add(handler.split(":")[0], "--handler")
        handler = handler_file + (":" + handler.split(":", 1)[1] if ":" in handler else "")
    serialized = add(request.serialized_file, "--serialized-file")
    model_file = add(request.model_file, "--model-file")
    config = add(request.config_file, "--config-file")
    requirements = add(request.requirements_file, "--requirements-file")
    for extra in request.extra_files:
        add(extra, "--extra-files")
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


def extract_archive(archive: Path, destination: Path) -> Path:
    """Unpack a .mar into ``destination`` (a directory .mar is used where it is) and return the model dir."""
    if archive.is_dir():
        if not (archive / MANIFEST).is_file():
            raise ArchiveError(f"{archive} is a directory without {MANIFEST}: not a model archive")
        return archive
    if not archive.is_file():
        raise ArchiveError(f"model archive {archive} does not exist")
    try:
        bundle = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise ArchiveError(f"{archive} is not a zip file: not a model archive (.mar)") from None
    with bundle:
        names = bundle.namelist()
        if MANIFEST not in names:
            raise ArchiveError(f"{archive} has no {MANIFEST}; make it with `launchkit archive` or torch-model-archiver")
        for info in bundle.infolist():
            _check_member(archive, info)
        destination.mkdir(parents=True, exist_ok=True)
        bundle.extractall(destination)
    return destination


def _check_member(archive: Path, info: zipfile.ZipInfo) -> None:
    name = info.filename
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"{archive}: entry {name!r} has an absolute path; refusing to extract it")
    if ".." in path.parts:
        raise ArchiveError(f"{archive}: entry {name!r} climbs out of the archive ('..'); refusing to extract it")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ArchiveError(f"{archive}: entry {name!r} is a symbolic link; archives may not contain links")


def read_manifest(model_dir: Path) -> Manifest:
    path = model_dir / MANIFEST
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ArchiveError(f"{path}: cannot read the manifest ({error})") from None
    return Manifest.from_json(data, str(path))


def read_model_config(model_dir: Path, manifest: Manifest) -> dict[str, Any]:
    """The archive's model-config.yaml (TorchServe keys: batchSize, maxBatchDelay, ...), or {}."""
    if not manifest.config_file:
        return {}
    import yaml  # only when an archive has one

    path = model_dir / manifest.config_file
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ArchiveError(f"{path}: cannot read the model config ({error})") from None
    if not isinstance(data, dict):
        raise ArchiveError(f"{path}: expected a mapping of settings")
    return data
