"""The `launchkit serve` a bench run starts (for a .mar target), on free loopback ports.

Started with :func:`launchkit.launch.spawn.spawn`, so it dies with bench even when bench is
SIGKILLed, and stopped as a process group (its workers with it).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from launchkit.core.errors import LaunchkitError
from launchkit.launch.spawn import spawn, stop


class ServerUnderTest:
    """A `launchkit serve` child on free loopback ports; stopped (and killed if need be) by pid."""

    def __init__(self, archive: Path, args: list[str], log: Path) -> None:
        self.port, management, metrics = free_ports(3)
        self.url = f"http://127.0.0.1:{self.port}"
        self.management_url = f"http://127.0.0.1:{management}"
        self.metrics_url = f"http://127.0.0.1:{metrics}/metrics"
        self.log = log
        self.handle = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.proc = spawn([sys.executable, "-m", "launchkit", "serve", str(archive), "--inference-address", self.url,
                           "--management-address", self.management_url, "--metrics-address",
                           self.metrics_url.removesuffix("/metrics"), *args],
                          stdout=self.handle, stderr=subprocess.STDOUT)

    def __enter__(self) -> "ServerUnderTest":
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise LaunchkitError(f"the server exited with status {self.proc.returncode}:\n"
                                     f"{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise LaunchkitError(f"the server was not ready after {timeout:g} s; its log: {self.log}")

    def stop(self) -> None:
        stop(self.proc, grace_s=30.0)
        self.handle.close()


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
