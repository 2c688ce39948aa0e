"""What TorchServe users' scripts, handlers and dashboards rely on: handlers built on TorchServe's own
``ts`` package (custom metrics included), TorchServe's metric names, --start/--stop, shared cores."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

from tests.serve.compat.conftest import archive, ts_only
from tests.serve.conftest import Server, free_port

MACHINES = Path(__file__).resolve().parents[2] / "fixtures" / "machines"

MNIST_STYLE = """
    import ts
    import torch
    from ts.metrics.metric_type_enum import MetricTypes
    from ts.torch_handler.base_handler import BaseHandler

    class DigitClassifier(BaseHandler):
        # TorchServe's mnist example's shape, without torchvision: a flat 28x28 image of float32 in
        def preprocess(self, data):
            metrics = self.context.metrics
            metrics.add_counter("DigitsSeen", len(data))
            metrics.add_size("PayloadSize", 3.0, None, "kB")
            metrics.add_percent("ModelConfidence", 87.5)
            rows = metrics.add_metric_to_cache("BatchRows", "count", ["ModelName"], MetricTypes.HISTOGRAM)
            rows.add_or_update(len(data), [self.context.model_name])
            return torch.stack([torch.frombuffer(bytearray(row.get("body")), dtype=torch.float32) for row in data])

        def postprocess(self, data):
            return [{"digit": int(row.argmax()), "ts": ts.__file__} for row in data]
"""


def test_handlers_on_torchserves_own_ts_package_and_torchserves_metric_names(tmp_path):
    import torch

    model = torch.nn.Linear(784, 10)
    traced = tmp_path / "mnist.pt"
    torch.jit.trace(model, torch.zeros(1, 784)).save(str(traced))
    handler = tmp_path / "mnist_handler.py"
    handler.write_text(textwrap.dedent(MNIST_STYLE))
    mar = archive(tmp_path, "mnist", "--serialized-file", str(traced), "--handler", str(handler))
    env = {"PYTHONPATH": str(ts_only())}  # TorchServe's ts importable, as for anyone migrating
    with Server([str(mar), "--batch-size", "4", "--max-batch-delay", "20"], free_port(), env=env) as server:
        image = struct.pack("<784f", *([0.5] * 784))
        for _ in range(3):
            status, _, answer = server.predict("mnist", image)
            assert status == 200, answer
        assert str(ts_only()) in answer["ts"]  # TorchServe's BaseHandler ran, not launchkit's stand-in
        assert server.predict("mnist", b"\0" * 10)[0] >= 400  # a bad body: a 4xx/5xx, counted
        assert server.predict("nope", image)[0] == 404

        samples = server.metrics()

        def value(name: str, **labels: str) -> float:
            wanted = tuple(sorted(labels.items()))
            found = [v for (n, got), v in samples.items() if n == name and set(wanted) <= set(got)]
            assert found, f"{name} {labels} not on /metrics"
            return sum(found)

        # TorchServe's frontend metrics, with its labels
        assert value("ts_inference_requests_total", model_name="mnist", model_version="1.0") == 4
        assert value("ts_inference_latency_microseconds", model_name="mnist") > 0
        assert value("ts_queue_latency_microseconds", model_name="mnist") > 0  # every request waits a little
        assert value("Requests2XX_total", Level="Host") == 3 and value("Requests4XX_total", Level="Host") >= 1
        text = server.request("GET", "/metrics", port=server.metrics_port)[2].decode()
        for group in (2, 4, 5):  # TorchServe's own lines, as its API test collections match them
            assert f"# TYPE Requests{group}XX counter\nRequests{group}XX{{Level=\"Host\",Hostname=\"" in text
        # what the handler emitted: TorchServe's BaseHandler's HandlerTime and the custom metrics
        assert value("HandlerTime", ModelName="mnist", Level="Model") > 0
        assert value("DigitsSeen", ModelName="mnist", Level="Model") == 4
        assert value("PayloadSize", ModelName="mnist") == 3.0
        assert value("ModelConfidence", ModelName="mnist") == 87.5
        assert value("BatchRows_count", ModelName="mnist") == 4
        assert all(("Hostname" in dict(labels)) for name, labels in samples if name == "DigitsSeen")


def test_start_and_stop_as_torchserve_scripts_do(example_archives, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(example_archives["tiny"], store / "tiny.mar")
    port = free_port()
    pid_file, logs = tmp_path / "serve.pid", tmp_path / "logs"
    common = ["--pid-file", str(pid_file)]

    def launchkit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "launchkit", "serve", *args], capture_output=True, text=True,
                              timeout=180)

    stopped = launchkit("--stop", *common)  # scripts stop defensively first: nothing running is fine
    assert stopped.returncode == 0 and "not running" in stopped.stdout
    start = ["--start", "--ncs", "--model-store", str(store), "--models", "tiny=tiny.mar", "--log-dir", str(logs),
             "--inference-address", f"http://127.0.0.1:{port}", "--management-address",
             f"http://127.0.0.1:{free_port()}", "--metrics-address", f"http://127.0.0.1:{free_port()}", *common]
    pid = None
    try:
        started = launchkit(*start)
        assert started.returncode == 0, started.stderr
        pid = int(pid_file.read_text())
        assert f"pid {pid}" in started.stdout and psutil.pid_exists(pid)
        assert (logs / "launchkit_serve.log").exists()
        again = launchkit(*start)
        assert again.returncode == 2 and "already running" in again.stderr and str(pid) in again.stderr
        workers = [child.pid for child in psutil.Process(pid).children(recursive=True)]
        stopped = launchkit("--stop", *common)
        assert stopped.returncode == 0 and f"pid {pid}" in stopped.stdout and "stopped" in stopped.stdout
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert not any(psutil.pid_exists(worker) for worker in workers)
        assert not pid_file.exists()
        failed = launchkit("--start", "--model-store", str(store), "--models", "missing.mar", "--log-dir", str(logs),
                           *common)
        assert failed.returncode != 0 and "missing.mar" in failed.stderr and not pid_file.exists()
    finally:
        if pid is not None and psutil.pid_exists(pid):
            os.killpg(pid, signal.SIGKILL)


def test_workers_share_cores_when_pinning_is_off(example_archives, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(example_archives["tiny"], store / "tiny.mar")
    config = tmp_path / "config.properties"
    config.write_text("cpu_launcher_enable=false\n")
    models = ["--models", "a=tiny.mar,b=tiny.mar,c=tiny.mar", "--workers", "2"]  # 6 workers, a 4-core machine
    machine = ["--topology-root", str(MACHINES / "desktop-4c-adjacent")]
    with Server(["--model-store", str(store), *models, "--ts-config", str(config), *machine], free_port()) as server:
        row = [0.25] * 64
        assert [server.predict(name, row)[0] for name in "abc"] == [200, 200, 200]
        assert "6 workers share 4 core slot(s)" in server.output() and "slower" in server.output()
