from __future__ import annotations

import json
import stat
import subprocess
import sys
import zipfile

import pytest

from launchkit.archive.manifest import MANIFEST, read_manifest
from launchkit.archive.reading import extract_archive
from launchkit.archive.writing import ArchiveRequest, create_archive
from launchkit.core.errors import ArchiveError, UsageError
from tests.serve.conftest import HANDLERS


def _request(tmp_path, **kwargs):
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"weights")
    extra = tmp_path / "labels.json"
    extra.write_text("{}")
    values = dict(model_name="m", version="2.0", handler=str(HANDLERS / "echo_handler.py"),
                  serialized_file=str(weights), extra_files=(str(extra),), export_path=str(tmp_path))
    values.update(kwargs)
    return ArchiveRequest(**values)


def test_layout_matches_torch_model_archiver(tmp_path):
    path = create_archive(_request(tmp_path))
    assert path.name == "m.mar"
    with zipfile.ZipFile(path) as bundle:
        assert sorted(bundle.namelist()) == sorted([MANIFEST, "echo_handler.py", "weights.pt", "labels.json"])
        manifest = json.loads(bundle.read(MANIFEST))
    assert manifest["model"] == {"modelName": "m", "modelVersion": "2.0", "handler": "echo_handler.py",
                                 "serializedFile": "weights.pt"}
    assert manifest["runtime"] == "python" and manifest["createdOn"]
    folder = extract_archive(path, tmp_path / "out")
    assert read_manifest(folder).serialized_file == "weights.pt"


def test_no_archive_format_and_force(tmp_path):
    folder = create_archive(_request(tmp_path, archive_format="no-archive"))
    assert (folder / MANIFEST).is_file() and extract_archive(folder, tmp_path / "unused") == folder
    create_archive(_request(tmp_path))
    with pytest.raises(UsageError, match="already exists; use -f/--force"):
        create_archive(_request(tmp_path))
    assert create_archive(_request(tmp_path, force=True)).exists()


def test_missing_inputs_are_named(tmp_path):
    with pytest.raises(UsageError, match="--serialized-file /nope: no such file"):
        create_archive(_request(tmp_path, serialized_file="/nope"))
    with pytest.raises(UsageError, match="--export-path"):
        create_archive(_request(tmp_path, export_path=str(tmp_path / "missing")))


@pytest.mark.parametrize("name, message", [
    ("../evil.py", "climbs out"),
    ("a/../../evil.py", "climbs out"),
    ("/etc/evil", "absolute path"),
])
def test_zip_slip_is_refused(tmp_path, name, message):
    path = tmp_path / "evil.mar"
    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr(MANIFEST, json.dumps({"model": {"modelName": "x", "handler": "h.py"}}))
        bundle.writestr(name, "boom")
    with pytest.raises(ArchiveError, match=message):
        extract_archive(path, tmp_path / "out")
    assert not (tmp_path / "evil.py").exists()


def test_links_are_refused(tmp_path):
    path = tmp_path / "link.mar"
    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr(MANIFEST, "{}")
        info = zipfile.ZipInfo("handler.py")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        bundle.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="symbolic link"):
        extract_archive(path, tmp_path / "out")


def test_not_an_archive(tmp_path):
    junk = tmp_path / "junk.mar"
    junk.write_text("not a zip")
    with pytest.raises(ArchiveError, match="not a zip file"):
        extract_archive(junk, tmp_path / "out")
    empty = tmp_path / "empty.mar"
    with zipfile.ZipFile(empty, "w") as bundle:
        bundle.writestr("model.pt", "x")
    with pytest.raises(ArchiveError, match="has no MAR-INF/MANIFEST.json"):
        extract_archive(empty, tmp_path / "out")


def test_bad_archive_makes_serve_exit_with_the_reason(tmp_path):
    path = tmp_path / "evil.mar"
    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr(MANIFEST, "{}")
        bundle.writestr("../x", "boom")
    result = subprocess.run([sys.executable, "-m", "launchkit", "serve", str(path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0 and "climbs out" in result.stderr


def test_archive_cli(tmp_path):
    result = subprocess.run([sys.executable, "-m", "launchkit", "archive", "--model-name", "cli", "-v", "1.0",
                             "--handler", str(HANDLERS / "echo_handler.py"), "--export-path", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 0 and (tmp_path / "cli.mar").exists()
    result = subprocess.run([sys.executable, "-m", "launchkit", "archive", "--model-name", "cli"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "missing --version, --handler" in result.stderr
