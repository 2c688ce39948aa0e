"""Tokens, the URL policy of POST /models (SSRF), archive pinning, exposure rules: on real servers."""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.serve.conftest import Server, free_port, make_archive


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("store")
    make_archive(folder, "echo_handler.py", "echo")
    make_archive(folder, "function_handler.py:handle", "function")
    return folder


@pytest.fixture
def archive_site(tmp_path, store):
    """A loopback HTTP server: /ok/function.mar, /ok/bounce (redirects off the allowed prefix)."""
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "function.mar").write_bytes((store / "function.mar").read_bytes())

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def do_GET(self):  # noqa: N802 - http.server's name
            self.server.hits.append(self.path)  # type: ignore[attr-defined]
            if self.path == "/ok/bounce":
                self.send_response(302)
                self.send_header("Location", "/secret/function.mar")
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    site.hits = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    yield site
    site.shutdown()
    site.server_close()


def test_tokens_guard_management_and_inference_but_never_health(store):
    env = {"LAUNCHKIT_MANAGEMENT_TOKEN": "m-secret", "LAUNCHKIT_INFERENCE_TOKEN": "i-secret"}
    with Server(["--model-store", str(store), "--models", "echo=echo.mar"], free_port(), env=env) as server:
        assert server.request("GET", "/ping")[0] == 200
        assert server.request("GET", "/v2/health/ready")[0] == 200
        assert server.request("GET", "/v2/health/live")[0] == 200
        status, headers, _ = server.request("POST", "/predictions/echo", b"{}")
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        assert server.request("GET", "/v2")[0] == 401
        good = {"Authorization": "Bearer i-secret"}
        assert server.predict("echo", {"a": 1}, headers=good)[0] == 200
        assert server.predict("echo", {"a": 1}, headers={"Authorization": "Bearer m-secret"})[0] == 401

        assert server.manage("GET", "/ping")[0] == 200
        for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": "m-secret"},
                        {"Authorization": "Basic bS1zZWNyZXQ="}):
            status, body = server.manage("GET", "/models", headers=headers)
            assert status == 401 and body["type"] == "UnauthorizedException", headers
        assert server.manage("GET", "/models", headers={"Authorization": "Bearer m-secret"})[0] == 200
        assert "m-secret" not in server.output() and "i-secret" not in server.output()


def test_ssrf_attempts_are_refused_and_fetch_nothing(store, archive_site):
    port = archive_site.server_address[1]
    with Server(["--model-store", str(store), "--models", "echo=echo.mar"], free_port()) as server:
        for url in (f"http://127.0.0.1:{port}/ok/function.mar", "file:///etc/passwd", "/etc/passwd",
                    "../../../../etc/passwd", "http://169.254.169.254/latest/meta-data/",
                    f"http://127.0.0.1:{server.management_port}/models"):
            status, body = server.manage("POST", f"/models?url={url}")
            assert status == 403 and "allowed_urls" in body["message"], (url, body)
        assert archive_site.hits == []  # refused before any request went out
        assert server.manage("GET", "/models")[1]["models"] == [{"modelName": "echo",
                                                                 "modelUrl": str(store / "echo.mar")}]


def test_allowed_urls_redirect_check_and_sha256_pin(tmp_path, store, archive_site):
    port = archive_site.server_address[1]
    config = tmp_path / "config.properties"
    config.write_text(f"allowed_urls=http://127\\.0\\.0\\.1:{port}/ok/.*\n")
    digest = hashlib.sha256((store / "function.mar").read_bytes()).hexdigest()
    url = f"http://127.0.0.1:{port}/ok/function.mar"
    with Server(["--model-store", str(store), "--models", "echo=echo.mar", "--ts-config", str(config)],
                free_port()) as server:
        status, body = server.manage("POST", f"/models?url=http://127.0.0.1:{port}/ok/bounce")
        assert status == 403 and "redirects to" in body["message"], body
        assert "/secret/function.mar" not in archive_site.hits
        status, body = server.manage("POST", f"/models?url={url}&sha256={'0' * 64}")
        assert status == 400 and "pinned" in body["message"], body
        status, body = server.manage("POST", f"/models?url={url}&sha256={digest}")
        assert status == 200, body
        assert server.predict("function", {"x": 1})[0] == 200


def test_model_api_and_metrics_can_be_turned_off(tmp_path, store):
    config = tmp_path / "config.properties"
    config.write_text("enable_model_api=false\nenable_metrics_api=false\n")
    with Server(["--model-store", str(store), "--models", "echo=echo.mar", "--ts-config", str(config)],
                free_port()) as server:
        assert server.manage("POST", "/models?url=function.mar")[0] == 405
        assert server.manage("DELETE", "/models/echo")[0] == 405
        assert server.manage("GET", "/models/echo")[0] == 200
        assert server.predict("echo", {"a": 1})[0] == 200
        with pytest.raises(ConnectionRefusedError):  # no metrics listener at all
            server.request("GET", "/metrics", port=server.metrics_port)
        assert "metrics off" in server.output()


def test_management_beyond_loopback_needs_a_token(store):
    result = subprocess.run([sys.executable, "-m", "launchkit", "serve", str(store / "echo.mar"),
                             "--inference-address", f"http://127.0.0.1:{free_port()}",
                             "--management-address", f"http://0.0.0.0:{free_port()}"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "LAUNCHKIT_MANAGEMENT_TOKEN" in result.stderr and "reachable from other machines" in result.stderr
