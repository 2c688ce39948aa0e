"""The container's entrypoint as a process, with a pod's environment: settings from LAUNCHKIT_<KEY>
variables, a store mounted where KServe puts it, a 1-CPU quota (a recorded cgroup tree), no numactl
on PATH; it plans inside the quota, says so, serves, and drains on SIGTERM with exit 0."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from launchkit.serve.settings import ServerFlags, server_config
from tests.conftest import machine_root
from tests.serve.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"


def test_every_config_key_can_come_from_the_environment(tmp_path):
    properties = tmp_path / "config.properties"
    properties.write_text("default_workers_per_model=3\njob_queue_size=50\n")
    environ = {"LAUNCHKIT_JOB_QUEUE_SIZE": "7", "LAUNCHKIT_INFERENCE_ADDRESS": "http://127.0.0.1:9000",
               "TS_DEFAULT_WORKERS_PER_MODEL": "5"}
    config = server_config(ServerFlags(ts_config=str(properties)), environ)
    assert config.job_queue_size == 7 and config.inference_address.port == 9000
    assert config.default_workers_per_model == 3  # TS_* only with enable_envvars_config=true, as in TorchServe
    enabled = server_config(ServerFlags(ts_config=str(properties)), {**environ, "TS_ENABLE_ENVVARS_CONFIG": "true"})
    assert enabled.default_workers_per_model == 5
    flags_win = server_config(ServerFlags(inference_address="http://127.0.0.1:9100"), environ)
    assert flags_win.inference_address.port == 9100


@pytest.fixture
def pod(tmp_path):
    """A pod's view: /mnt/models/model-store with an archive, PATH without numactl, the quota tree."""
    store = tmp_path / "mnt" / "models" / "model-store"
    store.mkdir(parents=True)
    from launchkit.examples.cache import ensure_examples

    shutil.copy(ensure_examples(("tiny",))[0], store / "tiny.mar")
    tools = tmp_path / "bin"  # only launchkit itself: no numactl, as in the image
    tools.mkdir()
    (tools / "launchkit").symlink_to(Path(sys.executable).parent / "launchkit")
    ports = {name: free_port() for name in ("inference", "management", "metrics")}
    env = {"PATH": str(tools), "HOME": str(tmp_path), "LAUNCHKIT_CACHE": str(tmp_path / "cache"),
           "LAUNCHKIT_MODEL_STORE": str(store), "LAUNCHKIT_TOPOLOGY_ROOT": str(machine_root("pod-2c-quota1")),
           "LAUNCHKIT_INFERENCE_ADDRESS": f"http://127.0.0.1:{ports['inference']}",
           "LAUNCHKIT_MANAGEMENT_ADDRESS": f"http://127.0.0.1:{ports['management']}",
           "LAUNCHKIT_METRICS_ADDRESS": f"http://127.0.0.1:{ports['metrics']}",
           "LAUNCHKIT_GRACEFUL_TIMEOUT": "5", "PYTHONDONTWRITEBYTECODE": "1",
           # the worker on both of the pod's cores (tiny alone would get one core, within the quota
           # anyway), so that the plan must scale its threads down to the quota
           "LAUNCHKIT_CPU_LAUNCHER_ARGS": "--ncores-per-instance 2"}
    return env, ports


def test_the_entrypoint_serves_a_pod_within_its_quota_and_drains_on_sigterm(pod, tmp_path):
    env, ports = pod
    log = tmp_path / "serve.log"
    with open(log, "w") as handle:
        server = subprocess.Popen(["/bin/sh", str(ENTRYPOINT)], env=env, stdout=handle, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports['inference']}/v2/health/ready", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
        body = json.dumps({"data": [0.5] * 64}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{ports['inference']}/predictions/tiny", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['management']}/models/tiny", timeout=5) as answer:
            workers = json.loads(answer.read())[0]["workers"]
        text = log.read_text()
        # the effective plan, printed at start-up, names the recorded 1-CPU quota and what it did about it
        assert "CPU quota is 1 CPUs (sys/fs/cgroup/kubepods/burstable/pod7/cpu.max)" in text, text[-3000:]
        assert "OpenMP threads scaled down to 1 in total" in text
        assert "numactl" in text  # memory binding is off, and the log says why
        assert len(workers) == 1
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        assert time.monotonic() - started < 25
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_the_image_definition_pins_cpu_torch_runs_as_a_user_and_starts_the_entrypoint():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert '"torch==2.13.0"' in text and "download.pytorch.org/whl/cpu" in text
    assert "\nUSER 1000\n" in text and 'ENTRYPOINT ["launchkit-entrypoint"]' in text
    assert "COPY deploy/entrypoint.sh /usr/local/bin/launchkit-entrypoint" in text
    assert "numactl" not in text.split("RUN apt-get")[1].split("\n\n")[0]  # not required in a pod
