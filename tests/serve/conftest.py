"""Helpers to run real `launchkit serve` processes on loopback and talk to them."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import pytest

from launchkit.archive.writing import ArchiveRequest, create_archive
from launchkit.core.ports import free_port
from launchkit.launch.spawn import spawn, stop

HANDLERS = Path(__file__).parent.parent / "fixtures" / "handlers"


def _command(process: Any) -> str:
    """A process's command line; "" for one that is gone or a zombie (one exited, not yet reaped)."""
    import psutil

    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> None:
    """Until ``condition()`` is true (polled every 20 ms); a test waits for what it needs, never a fixed time."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} not met within {timeout:g} s")


def handler_started(marker: Path, count: int = 1) -> Callable[[], bool]:
    """A condition: the echo handler has started on ``count`` items sent with ``{"started": marker}``."""
    return lambda: marker.exists() and len(marker.read_text().splitlines()) >= count


def tiny_logits(*rows: list[float]) -> list[list[float]]:
    """What the tiny example's model answers, computed here in the test's own process.

    The expected value of a served answer comes from the model, never from the server under test
    (another route of the same server would agree with itself even when both are wrong).
    """
    import torch

    from launchkit.examples.tiny import tiny_mlp

    with torch.inference_mode():
        return tiny_mlp()(torch.tensor(rows, dtype=torch.float32)).tolist()


def make_archive(folder: Path, handler: str, name: str, version: str = "1.0", **kwargs: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return create_archive(ArchiveRequest(model_name=name, version=version, handler=str(HANDLERS / handler),
                                         export_path=str(folder), force=True, **kwargs))


class Server:
    """A `launchkit serve` child process; always stopped (and killed if need be) by pid."""

    def __init__(self, args: list[str], port: int, wait_ready: bool = True, timeout: float = 90.0,
                 env: dict[str, str] | None = None) -> None:
        self.port = port
        self.management_port = free_port()
        self.metrics_port = free_port()
        self.log_path = Path(f"/tmp/launchkit-test-serve-{port}.log")
        self.log = open(self.log_path, "w")  # noqa: SIM115
        addresses = ["--inference-address", f"http://127.0.0.1:{port}"]
        if "--management-address" not in args:
            addresses += ["--management-address", f"http://127.0.0.1:{self.management_port}"]
        if "--metrics-address" not in args:
            addresses += ["--metrics-address", f"http://127.0.0.1:{self.metrics_port}"]
        self.proc = spawn([sys.executable, "-m", "launchkit", "serve", *addresses, *args],
                          stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.wait_ready(timeout, path="/v2/health/ready" if wait_ready else "/ping")

    def wait_ready(self, timeout: float = 90.0, path: str = "/v2/health/ready") -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                status, _, _ = self.request("GET", path)
                if status == 200 or (path == "/ping" and status == 500):  # up (500: a model is marked failed)
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text()

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                timeout: float = 30.0, port: int | None = None) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def predict(self, model: str, payload: Any, headers: dict[str, str] | None = None,
                timeout: float = 30.0) -> tuple[int, dict[str, str], Any]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        all_headers = {"content-type": "application/json"} if not isinstance(payload, bytes) else {}
        all_headers.update(headers or {})
        status, response_headers, data = self.request("POST", f"/predictions/{model}", body, all_headers, timeout)
        try:
            return status, response_headers, json.loads(data)
        except ValueError:
            return status, response_headers, data

    def manage(self, method: str, path: str, headers: dict[str, str] | None = None,
               timeout: float = 60.0) -> tuple[int, Any]:
        """A management API call; the body parsed as JSON."""
        status, _, data = self.request(method, path, headers=headers, timeout=timeout, port=self.management_port)
        return status, json.loads(data) if data else None

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics, parsed with prometheus_client's parser: (name, labels) → value."""
        from prometheus_client.parser import text_string_to_metric_families

        status, _, data = self.request("GET", "/metrics", port=self.metrics_port)
        assert status == 200, data
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(data.decode()) for sample in family.samples}

    def worker_pids(self) -> list[int]:
        import psutil

        children = psutil.Process(self.proc.pid).children(recursive=True)
        # the fork server and the gRPC relays are the frontend's children too (the workers the fork server
        # forked carry its command line)
        helpers = ("launchkit.serve.worker.zygote", "launchkit.serve.api.grpc_relay")
        return [child.pid for child in children
                if not (child.ppid() == self.proc.pid and any(name in _command(child) for name in helpers))]

    def relay_pids(self) -> list[int]:
        """The server's live gRPC relay processes."""
        import psutil

        return [child.pid for child in psutil.Process(self.proc.pid).children()
                if "launchkit.serve.api.grpc_relay" in _command(child)]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        code = stop(self.proc, timeout, sig)
        self.log.close()
        return code

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def archives(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("archives")
    return {
        "echo": make_archive(folder, "echo_handler.py", "echo"),
        "broken": make_archive(folder, "broken_handler.py", "broken"),
        "function": make_archive(folder, "function_handler.py:handle", "function"),
    }


@pytest.fixture(scope="session")
def example_archives(tmp_path_factory) -> dict[str, Path]:
    from launchkit.examples.build import build_example

    folder = tmp_path_factory.mktemp("examples")
    return {name: build_example(name, str(folder)) for name in ("tiny", "resnet18")}
