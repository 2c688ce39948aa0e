"""Where POST /models?url= may load from (serve/sources.py): the policy is pure, checked here."""

from __future__ import annotations

import hashlib

import pytest

from launchkit.core.errors import SourceError, SourceMissing, SourceRefused
from launchkit.serve.sources import SourcePolicy, check_sha256, resolve


@pytest.fixture
def store(tmp_path):
    folder = tmp_path / "store"
    folder.mkdir()
    (folder / "tiny.mar").write_bytes(b"PK")
    (tmp_path / "outside.mar").write_bytes(b"PK")
    (folder / "link.mar").symlink_to(tmp_path / "outside.mar")
    return folder


def test_store_names_resolve_inside_the_store(store):
    source = resolve("tiny.mar", SourcePolicy(store))
    assert source.kind == "file" and source.path == (store / "tiny.mar").resolve()
    assert resolve(f"file://{store}/tiny.mar", SourcePolicy(store)).path == (store / "tiny.mar").resolve()


@pytest.mark.parametrize("url", ["file:///etc/passwd", "/etc/passwd", "../outside.mar", "link.mar",
                                 "http://169.254.169.254/latest/meta-data", "https://example.com/x.mar",
                                 "http://127.0.0.1:8081/models"])
def test_everything_outside_the_store_is_refused_by_default(store, url):
    with pytest.raises(SourceRefused, match="allowed_urls"):
        resolve(url, SourcePolicy(store))


def test_allowed_urls_must_match_the_whole_url(store):
    policy = SourcePolicy(store, (r"https://models\.example\.com/.*",))
    assert resolve("https://models.example.com/a.mar", policy).kind == "http"
    with pytest.raises(SourceRefused):
        resolve("https://models.example.com.evil.net/a.mar", policy)
    with pytest.raises(SourceRefused):
        resolve("http://x/?https://models.example.com/a.mar", policy)


def test_unsupported_schemes_missing_files_and_no_store(store):
    with pytest.raises(SourceError, match="not supported"):
        resolve("gopher://x/a.mar", SourcePolicy(store))
    with pytest.raises(SourceMissing):
        resolve("nope.mar", SourcePolicy(store))
    with pytest.raises(SourceError, match="--model-store"):
        resolve("tiny.mar", SourcePolicy(None))
    with pytest.raises(SourceError, match="empty"):
        resolve(" ", SourcePolicy(store))


def test_sha256_pin(store):
    path = store / "tiny.mar"
    check_sha256(path, hashlib.sha256(b"PK").hexdigest().upper())
    with pytest.raises(SourceError, match="pinned"):
        check_sha256(path, "0" * 64)
    with pytest.raises(SourceError, match="64 hex"):
        check_sha256(path, "abc")
