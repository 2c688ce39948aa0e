"""Opening an archive: extract it safely, read its model-config.yaml.

Extraction refuses absolute paths, ``..`` and links: a .mar comes from somewhere else, and
zip-slip would let it write anywhere.
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from launchkit.archive.manifest import MANIFEST, Manifest
from launchkit.core.errors import ArchiveError


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
