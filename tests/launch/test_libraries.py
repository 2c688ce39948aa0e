from __future__ import annotations

import os
import sys

from launchkit.launch.libraries import find_library, library_family, probe_numactl, search_dirs


def test_versioned_sonames_are_found(tmp_path):
    (tmp_path / "libjemalloc.so.2").write_bytes(b"")
    (tmp_path / "libtcmalloc_minimal.so.4").write_bytes(b"")
    assert find_library("jemalloc", [tmp_path]).path.endswith("libjemalloc.so.2")
    assert find_library("tcmalloc", [tmp_path]).path.endswith("libtcmalloc_minimal.so.4")


def test_unversioned_name_preferred(tmp_path):
    (tmp_path / "libjemalloc.so.2").write_bytes(b"")
    (tmp_path / "libjemalloc.so").write_bytes(b"")
    assert find_library("jemalloc", [tmp_path]).path.endswith("libjemalloc.so")


def test_search_covers_interpreter_prefix_and_multiarch(monkeypatch):
    monkeypatch.delenv("LAUNCHKIT_LIBRARY_PATH", raising=False)
    dirs = [str(d) for d in search_dirs()]
    assert dirs[0] == os.path.join(sys.prefix, "lib")  # un-activated venv: pip's intel-openmp lands here
    assert any(d.endswith("-linux-gnu") for d in dirs)


def test_family_of_preloaded_files():
    assert library_family("/x/libjemalloc.so.2") == "jemalloc"
    assert library_family("libtcmalloc_minimal_debug.so.4") == "tcmalloc"
    assert library_family("/venv/lib/libiomp5.so") == "iomp5"
    assert library_family("/lib/libc.so.6") is None


def test_installed_libraries_are_found_here():
    """This machine's set-up installs libjemalloc2, libtcmalloc-minimal4 and intel-openmp."""
    assert find_library("jemalloc") is not None
    assert find_library("tcmalloc") is not None
    assert find_library("iomp5") is not None


def test_numactl_probe_uses_an_allowed_node():
    status = probe_numactl((0,))
    assert status.found and status.membind, status.reason
    assert "node 0" in status.reason


def test_launchkit_library_path_is_searched_first(tmp_path, monkeypatch):
    (tmp_path / "libiomp5.so").write_bytes(b"")
    monkeypatch.setenv("LAUNCHKIT_LIBRARY_PATH", f"/nonexistent:{tmp_path}")
    assert find_library("iomp5").path == str(tmp_path / "libiomp5.so")
