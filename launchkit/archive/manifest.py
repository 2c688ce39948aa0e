"""The archive's manifest (``MAR-INF/MANIFEST.json``), read the one way, from a folder or a zip.

A .mar is a zip of the model's files, flattened at the root, plus the manifest; ``no-archive``
is the same tree as a directory. Everything that needs to know what an archive holds (the
server, the worker, bench, optimize) reads it through :func:`read_manifest`.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from launchkit.core.errors import ArchiveError

MANIFEST = "MAR-INF/MANIFEST.json"
# A model's name and version become URL path segments (/predictions/{name}/{version}): a "/" or "%2F"
# in one made a model that could never be reached nor deleted.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(value: str, what: str) -> str:
    """``value`` if it is a usable model name or version; ArchiveError naming the rule otherwise."""
    if not NAME_PATTERN.fullmatch(value):
        raise ArchiveError(f"{what} {value[:80]!r} is not usable in a URL: use up to 128 letters, digits, '.', '_' and "
                           "'-', starting with a letter or digit")
    return value


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
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # as written (handlers see it)

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
    def from_json(cls, data: Any, source: str) -> Manifest:
        model = data.get("model") if isinstance(data, dict) else None
        if not isinstance(model, dict) or not model.get("modelName") or not model.get("handler"):
            raise ArchiveError(f"{source}: MANIFEST.json needs model.modelName and model.handler")
        for key in ("handler", "serializedFile", "modelFile", "configFile", "requirementsFile", "extensions"):
            if model.get(key) is not None:
                _inside(str(model[key]).split(":")[0] if key == "handler" else str(model[key]), key, source)
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
            raw=data,
        )


def _inside(path: str, key: str, source: str) -> None:
    """A manifest may only name files inside its archive: not absolute, no ``..`` (its handler runs as code,
    its configFile would be read and quoted in an error)."""
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":") or ".." in parts:
        raise ArchiveError(f"{source}: {key} {path[:120]!r} points outside the archive; a manifest may only name "
                           "files inside it")


MAX_MANIFEST_BYTES = 2**20


def read_manifest(source: Path) -> Manifest:
    """The manifest of an extracted archive (a folder) or of a .mar file, without extracting it."""
    if not source.exists():
        raise ArchiveError(f"model archive {source} does not exist")
    try:
        if source.is_dir():
            text = (source / MANIFEST).read_bytes()
        else:
            with zipfile.ZipFile(source) as bundle:
                if bundle.getinfo(MANIFEST).file_size > MAX_MANIFEST_BYTES:
                    raise ArchiveError(f"{source}: its MANIFEST.json is over {MAX_MANIFEST_BYTES >> 20} MiB; not a "
                                       "model archive's")
                text = bundle.read(MANIFEST)
        data = json.loads(text)
    except RecursionError:
        raise ArchiveError(f"{source}: MANIFEST.json is nested too deeply to read") from None
    except FileNotFoundError:
        raise ArchiveError(f"{source}: no {MANIFEST}; not a model archive (make one with `launchkit archive` or "
                           "torch-model-archiver)") from None
    except KeyError:
        raise ArchiveError(f"{source} has no {MANIFEST}; make it with `launchkit archive` or "
                           "torch-model-archiver") from None
    except zipfile.BadZipFile:
        raise ArchiveError(f"{source} is not a zip file: not a model archive (.mar)") from None
    except (OSError, ValueError) as error:
        raise ArchiveError(f"{source}: cannot read the manifest ({error})") from None
    return Manifest.from_json(data, str(source / MANIFEST if source.is_dir() else source))
