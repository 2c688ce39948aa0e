"""Opening an archive: extract it safely, read its model-config.yaml.

A .mar comes from somewhere else, so extraction refuses absolute paths, ``..`` and links
(zip-slip would let it write anywhere), and checks the zip's directory against
:class:`ExtractionLimits` before it writes a byte: a 1 MB archive that unpacks to 1 GiB, or
100,000 tiny files, is refused up front. zipfile never writes more than an entry's declared size,
so the directory's figures bound what extraction can cost. A failed extraction leaves nothing.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from launchkit.archive.manifest import MANIFEST, Manifest
from launchkit.core.errors import ArchiveError


@dataclass(frozen=True)
class ExtractionLimits:
    max_bytes: int = 64 * 2**30  # uncompressed, all entries: room for real multi-GB weights
    max_entries: int = 10_000
    max_ratio: float = 200.0  # uncompressed ÷ compressed for an entry over ratio_floor: weights compress ~1.1:1
    ratio_floor: int = 2**20


def check_limits(archive: Path, infos: list[zipfile.ZipInfo], limits: ExtractionLimits) -> None:
    if len(infos) > limits.max_entries:
        raise ArchiveError(f"{archive} holds {len(infos):,} entries; at most {limits.max_entries:,} are accepted "
                           "(max_archive_entries)")
    total = sum(info.file_size for info in infos)
    if total > limits.max_bytes:
        raise ArchiveError(f"{archive} unpacks to {total:,} bytes; at most {limits.max_bytes:,} are accepted "
                           "(max_archive_size)")
    for info in infos:
        if info.file_size > limits.ratio_floor and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise ArchiveError(f"{archive}: entry {info.filename!r} expands {info.file_size / max(info.compress_size, 1):,.0f}"
                               f" times ({info.compress_size:,} → {info.file_size:,} bytes); at most "
                               f"{limits.max_ratio:g}:1 is accepted (max_archive_ratio): a zip bomb?")


def inspect_archive(archive: Path, limits: ExtractionLimits = ExtractionLimits()) -> None:
    """Check a .mar's directory (entry paths, links, sizes, counts, ratios) without writing anything."""
    if archive.is_dir():
        return
    try:
        with zipfile.ZipFile(archive) as bundle:
            infos = bundle.infolist()
    except zipfile.BadZipFile:
        raise ArchiveError(f"{archive} is not a zip file: not a model archive (.mar)") from None
    except FileNotFoundError:
        raise ArchiveError(f"model archive {archive} does not exist") from None
    for info in infos:
        _check_member(archive, info)
    check_limits(archive, infos, limits)


def extract_archive(archive: Path, destination: Path, limits: ExtractionLimits = ExtractionLimits()) -> Path:
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
        infos = bundle.infolist()
        for info in infos:
            _check_member(archive, info)
        check_limits(archive, infos, limits)
        destination.mkdir(parents=True, exist_ok=True)
        try:
            bundle.extractall(destination)
        except BaseException as error:
            shutil.rmtree(destination, ignore_errors=True)
            if isinstance(error, (OSError, zipfile.BadZipFile, EOFError)):
                raise ArchiveError(f"{archive}: extraction failed ({error}); nothing was kept") from None
            raise
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
    path = model_dir / manifest.config_file
    try:
        return _config(path.read_bytes(), str(path))
    except OSError as error:
        raise ArchiveError(f"{path}: cannot read the model config ({error})") from None


def read_member(source: Path, name: str) -> bytes:
    """One file of an archive (a .mar or an extracted folder), without extracting the rest."""
    try:
        if source.is_dir():
            return (source / name).read_bytes()
        with zipfile.ZipFile(source) as bundle:
            return bundle.read(name)
    except (KeyError, FileNotFoundError):
        raise ArchiveError(f"{source} has no file {name!r}") from None
    except zipfile.BadZipFile:
        raise ArchiveError(f"{source} is not a zip file: not a model archive (.mar)") from None
    except OSError as error:
        raise ArchiveError(f"{source}: cannot read {name} ({error.strerror or error})") from None


def model_config_of(source: Path, manifest: Manifest) -> dict[str, Any]:
    """The model-config.yaml of a .mar (or folder) without extracting it; {} if it has none."""
    if not manifest.config_file:
        return {}
    return _config(read_member(source, manifest.config_file), f"{source}: {manifest.config_file}")


def _config(text: bytes, where: str) -> dict[str, Any]:
    import yaml  # only when an archive has a model config

    try:
        data = yaml.safe_load(text) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ArchiveError(f"{where}: cannot read the model config ({error})") from None
    except RecursionError:
        raise ArchiveError(f"{where}: the model config is nested too deeply to read") from None
    if not isinstance(data, dict):
        raise ArchiveError(f"{where}: expected a mapping of settings")
    return data
