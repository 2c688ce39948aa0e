"""The request bodies a run sends: ``--input`` files, or the sample input the archive declares.

A body that does not fit the model only measures how fast the server says 400, so bench never
guesses one. An archive declares its sample in its model-config.yaml (a launchkit key that
TorchServe ignores), and the bundled examples declare theirs::

    bench_input:
      file: sample.jpg            # a file in the archive (--extra-files)
      content_type: image/jpeg

A .mar without one needs ``--input FILE`` (``--content-type`` says its type); a URL target without
one gets requests with no body (a GET unless ``--method`` says otherwise).
"""

from __future__ import annotations

from pathlib import Path

from launchkit.archive.manifest import read_manifest
from launchkit.archive.reading import model_config_of, read_member
from launchkit.bench.requests import Payload
from launchkit.core.errors import ArchiveError, UsageError

DEFAULT_CONTENT_TYPE = "application/octet-stream"


def declared_input(archive: Path) -> Payload | None:
    """The archive's ``bench_input``, or None when it declares none."""
    manifest = read_manifest(archive)
    declared = model_config_of(archive, manifest).get("bench_input")
    if declared is None:
        return None
    if not isinstance(declared, dict) or not isinstance(declared.get("file"), str):
        raise ArchiveError(f"{archive}: bench_input in its model config must be {{file: NAME, content_type: TYPE}}")
    return Payload(read_member(archive, declared["file"]), str(declared.get("content_type") or DEFAULT_CONTENT_TYPE))


def load_payloads(files: tuple[str, ...], content_type: str | None, archive: Path | None,
                  bodiless: bool = False) -> list[Payload]:
    """``--input`` files (rotated) or the archive's declared sample; UsageError when there is neither.
    ``bodiless`` (a URL target): no files means requests without a body (GET, as ab and hey send)."""
    if files:
        payloads = []
        for path in files:
            try:
                payloads.append(Payload(Path(path).read_bytes(), content_type or DEFAULT_CONTENT_TYPE))
            except OSError as error:
                raise UsageError(f"--input {path}: {error.strerror}") from None
        return payloads
    if bodiless:
        return []
    declared = declared_input(archive) if archive is not None else None
    if declared is None:
        what = str(archive) if archive is not None else "this target"
        raise UsageError(f"{what} declares no sample input (bench_input in its model-config.yaml), so bench cannot "
                         "know what to send: give --input FILE (and --content-type TYPE)")
    if content_type:
        return [Payload(declared.body, content_type)]
    return [declared]
