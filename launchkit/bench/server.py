"""The `launchkit serve` a bench run starts (for a .mar target), on free loopback ports.

Started with :func:`launchkit.launch.spawn.spawn`, so it dies with bench even when bench is
SIGKILLed, and stopped as a process group (its workers with it). Its log goes where the caller
says (bench: the report folder), and a model that cannot load is reported as soon as the server
knows it (its management API's ``lastError``), with the reason, instead of after a timeout.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

from launchkit.archive.manifest import read_manifest
from launchkit.core.errors import LaunchkitError, ModelLoadFailed
from launchkit.core.ports import free_ports
from launchkit.launch.spawn import spawn, stop

START_TIMEOUT_S = 180.0


class ServerUnderTest:
    """A `launchkit serve` child on free loopback ports; stopped (and killed if need be) by pid.

    ``archive`` None: the server starts with no model (an empty model store); ``allow_url``: the
    one remote archive URL its registration may fetch (allowed_urls, escaped exactly).
    """

    def __init__(self, archive: Path | None, args: list[str], log: Path, allow_url: str | None = None) -> None:
        self.port, management, metrics = free_ports(3)
        self.url = f"http://127.0.0.1:{self.port}"
        self.management_url = f"http://127.0.0.1:{management}"
        self.metrics_url = f"http://127.0.0.1:{metrics}/metrics"
        self.log = log
        self.model = read_manifest(archive).model_name if archive is not None else None
        models = [str(archive)] if archive is not None else []
        if archive is None:
            store = Path(tempfile.mkdtemp(prefix="launchkit-bench-store-"))
            models = ["--model-store", str(store)]
            if allow_url:
                config = store / "config.properties"
                config.write_text(f"allowed_urls={re.escape(allow_url)}\n")
                models += ["--ts-config", str(config)]
        self.handle = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.proc = spawn([sys.executable, "-m", "launchkit", "serve", *models, "--inference-address", self.url,
                           "--management-address", self.management_url, "--metrics-address",
                           self.metrics_url.removesuffix("/metrics"), *args],
                          stdout=self.handle, stderr=subprocess.STDOUT)

    def __enter__(self) -> "ServerUnderTest":
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float = START_TIMEOUT_S, status: Callable[[str], None] | None = None) -> None:
        """Until the server is ready; a model that fails to load, or the server exiting, raises at once."""
        deadline = time.time() + timeout
        said = ""
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise LaunchkitError(f"launchkit serve exited with status {self.proc.returncode} before it was ready:"
                                     f"\n{self._tail()}\n(its whole log: {self.log})")
            if _get(f"{self.url}/v2/health/ready") is not None:
                return
            described = self.describe()
            if described is not None:
                failure = next((w.get("lastError") for w in described.get("workers", [])
                                if str(w.get("lastError") or "").startswith("model failed to load")), None)
                if failure:
                    raise ModelLoadFailed(f"model {self.model} cannot be loaded: {failure}\n(the server's log: "
                                          f"{self.log})")
                states = ", ".join(f"worker {w.get('id')} {str(w.get('status', '?')).lower()}"
                                   for w in described.get("workers", []))
                message = f"loading {self.model}: {states or 'no worker yet'}"
                if status and message != said:
                    status(message)
                    said = message
            time.sleep(0.1)
        raise LaunchkitError(f"the server was not ready after {timeout:g} s; its log: {self.log}")

    def describe(self) -> dict[str, Any] | None:
        """``GET /models/{model}`` of the management API, or None (not up yet, or no model)."""
        if self.model is None:
            return None
        answer = _get(f"{self.management_url}/models/{self.model}")
        return answer[0] if isinstance(answer, list) and answer else None

    def register(self, url: str, config: Any) -> str:
        """``POST /models?url=`` (synchronous) with the run's server settings; the model's name."""
        query = {"url": url, "synchronous": "true", "initial_workers": config.workers or 1}
        if config.batch_size is not None:
            query["batch_size"] = config.batch_size
        if config.batch_delay_ms is not None:
            query["max_batch_delay"] = config.batch_delay_ms
        self._wait_listening()
        request = urllib.request.Request(f"{self.management_url}/models?{urllib.parse.urlencode(query)}",
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=START_TIMEOUT_S) as response:
                response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("message", detail)
            except ValueError:
                pass
            raise LaunchkitError(f"the server could not register {url} (HTTP {error.code}): {detail}") from None
        models = _get(f"{self.management_url}/models") or {}
        names = [entry["modelName"] for entry in models.get("models", [])]
        if len(names) != 1:
            raise LaunchkitError(f"after registering {url} the server holds {names}; expected one model")
        self.model = names[0]
        return self.model

    def _wait_listening(self) -> None:
        deadline = time.time() + START_TIMEOUT_S
        while _get(f"{self.url}/ping") is None:
            if self.proc.poll() is not None or time.time() > deadline:
                raise LaunchkitError(f"launchkit serve did not start:\n{self._tail()}\n(its log: {self.log})")
            time.sleep(0.05)

    def _tail(self) -> str:
        try:
            return self.log.read_text()[-3000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        stop(self.proc, grace_s=30.0)
        self.handle.close()


def _get(url: str) -> Any:
    """The JSON a 200 answer carries, or None (not listening yet, not ready, any error)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read() or b"null") if response.status == 200 else None
    except (OSError, ValueError):
        return None
