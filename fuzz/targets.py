"""Fuzz targets: every parser that reads bytes or text a client, an archive or a user wrote.

Each target takes the fuzzer's bytes and hands them to one parser. The contract checked: a parser
either returns or raises launchkit's own error (a ``LaunchkitError``: the 400 a client gets, the
message a user reads); any other exception (IndexError, KeyError, UnicodeDecodeError, RecursionError,
a ValueError that escaped) is a crash, and the fuzzer saves the input that caused it.

Run by ``fuzz/run.py`` under atheris (coverage-guided); seeds in ``fuzz/corpus/<target>/``.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from launchkit.core.errors import LaunchkitError

MAX_ELEMENTS = 4096  # small, so a fuzzer's "shape": [1e9] is refused quickly rather than allocated


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def multipart(data: bytes) -> None:
    """TorchServe-style form bodies: the first line completes the content type, the rest is the body."""
    from launchkit.serve.worker.codec import decode_item
    from launchkit.serve.wire import ItemRequest

    header, _, body = data.partition(b"\n")
    content_type = ("multipart/form-data; " if not header.startswith(b"application") else "") + \
        header.decode("latin-1")
    decode_item(ItemRequest("fuzz", body, content_type, []))


def _v2(body: bytes, header_length: int | None) -> None:
    """A v2 request as far as a client's bytes reach: the frontend's parse into rows, then each row as
    the worker decodes it for the handler (tensors made over the bytes, BYTES elements, JSON data)."""
    from launchkit.serve.api.kserve_codec import parse_infer
    from launchkit.serve.wire import ItemRequest
    from launchkit.serve.worker.codec import decode_item

    for row, content_type in parse_infer(body, header_length, MAX_ELEMENTS).rows:
        decode_item(ItemRequest("fuzz", row, content_type, []))


def v2_json(data: bytes) -> None:
    _v2(data, None)


def v2_binary(data: bytes) -> None:
    """Triton's binary extension: the first two bytes choose the JSON header's length."""
    if len(data) < 2:
        return
    body = data[2:]
    _v2(body, int.from_bytes(data[:2], "little") % (len(body) + 1))


def v1(data: bytes) -> None:
    from launchkit.serve.api.kserve_v1 import parse_predict

    parse_predict(data)


def properties(data: bytes) -> None:
    """config.properties, through every key's own parser (addresses, limits, models={...} JSON, ...)."""
    from launchkit.serve.properties import parse_properties
    from launchkit.serve.settings import config_from_properties

    config_from_properties(parse_properties(_text(data)), "fuzz.properties")


_ARCHIVE = Path(tempfile.gettempdir()) / f"launchkit-fuzz-{os.getpid()}.mar"


def manifest(data: bytes) -> None:
    """An archive's MANIFEST.json: odd first byte, the bytes as the .mar file itself (the zip reader);
    even, the bytes as the manifest inside a well-formed zip."""
    from launchkit.archive.manifest import read_manifest

    if not data:
        return
    if data[0] % 2:
        _ARCHIVE.write_bytes(data[1:])
    else:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as bundle:
            bundle.writestr("MAR-INF/MANIFEST.json", data[1:])
        _ARCHIVE.write_bytes(buffer.getvalue())
    read_manifest(_ARCHIVE)


def cpu_list(data: bytes) -> None:
    from launchkit.core.cpulist import format_cpu_list, parse_cpu_list

    cpus = parse_cpu_list(_text(data))
    if parse_cpu_list(format_cpu_list(cpus)) != tuple(sorted(set(cpus))) and cpus == tuple(sorted(set(cpus))):
        raise AssertionError(f"{_text(data)!r}: formatting {cpus} does not read back")


def _flag_parsers() -> list[Callable[[str], object]]:
    from launchkit.bench.compare import parse_fail_on
    from launchkit.bench.config import parse_header, parse_method, parse_percent, parse_range, parse_warmup
    from launchkit.core.values import parse_bool
    from launchkit.model.spec import parse_spec
    from launchkit.serve.addresses import parse_address
    from launchkit.serve.settings import parse_allowed_urls
    from launchkit.tune.space import KNOBS, parse_knobs

    return [
        lambda text: parse_spec(text, "--optimization"),
        lambda text: parse_spec(json.loads(text), "optimization"),  # as model-config.yaml or JSON gives it
        lambda text: parse_address(text, "--inference-address"),
        parse_header, parse_method, parse_warmup, parse_fail_on,
        lambda text: parse_percent(text, "--max-error-rate"),
        lambda text: parse_range(text, "--concurrency", int),
        lambda text: parse_range(text, "--rate", float),
        lambda text: parse_bool(text, "synchronous"),
        lambda text: parse_allowed_urls(text, "allowed_urls"),
        lambda text: parse_knobs(text, KNOBS),
    ]


_FLAGS: list[Callable[[str], object]] = []


def flags(data: bytes) -> None:
    """Every flag or setting that takes free text; the first byte picks the parser."""
    if not _FLAGS:
        _FLAGS.extend(_flag_parsers())
    if not data:
        return
    parser = _FLAGS[data[0] % len(_FLAGS)]
    try:
        parser(_text(data[1:]))
    except json.JSONDecodeError:
        pass  # the JSON text itself was not JSON: json's business, not the parser's


TARGETS: dict[str, Callable[[bytes], None]] = {
    "multipart": multipart, "v2_json": v2_json, "v2_binary": v2_binary, "v1": v1,
    "properties": properties, "manifest": manifest, "cpu_list": cpu_list, "flags": flags,
}


def checked(target: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """The target with launchkit's own errors allowed; anything else propagates as a crash."""

    def one_input(data: bytes) -> None:
        try:
            target(data)
        except LaunchkitError:
            pass

    return one_input
