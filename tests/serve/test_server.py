"""`launchkit serve` for real: processes, loopback HTTP, batching, failures, shutdown."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.serve.conftest import Server, free_port, handler_started, make_archive, tiny_logits, wait_for

ALLOWED = sorted(os.sched_getaffinity(0))


def parallel(count: int, function):
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(function, range(count)))


# --- batching -----------------------------------------------------------------------------------


def test_every_response_belongs_to_its_request_under_concurrency(archives):
    with Server([str(archives["echo"]), "--batch-size", "4", "--max-batch-delay", "20"], free_port()) as server:
        def call(i):
            return server.predict("echo", {"id": i, "pad": "x" * (i % 7)}, headers={"x-test": f"h{i}"})

        results = parallel(48, call)
        for i, (status, headers, body) in enumerate(results):
            assert status == 200, body
            assert body["echo"] == {"id": i, "pad": "x" * (i % 7)}
            assert body["header"] == f"h{i}"
            assert body["request_id"] == headers["x-request-id"]
        assert max(body["batch"] for _, _, body in results) > 1, "concurrent requests were never batched"
        assert max(body["batch"] for _, _, body in results) <= 4


def test_lone_request_does_not_pay_the_batch_delay(archives):
    with Server([str(archives["echo"]), "--batch-size", "8", "--max-batch-delay", "500"], free_port()) as server:
        server.predict("echo", {"warm": 1})
        timings = []
        for i in range(5):  # one after another: each is alone in the queue
            started = time.perf_counter()
            status, _, body = server.predict("echo", {"i": i})
            timings.append(time.perf_counter() - started)
            assert status == 200 and body["batch"] == 1
        assert sorted(timings)[2] < 0.25, f"lone requests waited for the 500 ms delay: {timings}"


def test_one_bad_item_does_not_fail_its_batch_mates(archives, tmp_path):
    marker = tmp_path / "started"
    with Server([str(archives["echo"]), "--batch-size", "4", "--max-batch-delay", "2000"], free_port()) as server:
        with ThreadPoolExecutor(max_workers=1) as pool:
            busy = pool.submit(server.predict, "echo", {"sleep": 0.5, "started": str(marker)})  # the worker is busy...
            wait_for(handler_started(marker), what="the first request in the worker")
            results = parallel(4, lambda i: server.predict("echo", {"i": i, "bad": i == 2}))  # ...so these queue
            assert busy.result()[0] == 200
        statuses = [status for status, _, _ in results]
        assert statuses.count(422) == 1 and statuses.count(200) == 3
        assert results[2][0] == 422 and results[2][2]["error"] == "bad item"
        # the four went as one batch: the per-item status path ran beside good items, not alone
        assert [body["batch"] for _, _, body in results] == [4, 4, 4, 4]


def test_handler_failure_and_wrong_output_count_are_clear_500s(archives):
    with Server([str(archives["echo"])], free_port()) as server:
        status, _, body = server.predict("echo", {"fail": True})
        assert status == 500 and "asked to fail" in body["message"] and body["type"] == "InternalServerException"
        status, _, body = server.predict("echo", {"short": True})
        assert status == 500 and "returned 0 outputs for a batch of 1" in body["message"]
        assert server.predict("echo", {"ok": 1})[0] == 200  # the server keeps serving


# --- bad requests ---------------------------------------------------------------------------------


def test_bad_requests_get_json_errors(tmp_path, archives):
    config = tmp_path / "config.properties"
    config.write_text("max_request_size=1000\nsome_typo_key=1\n")
    port = free_port()
    with Server([str(archives["echo"]), "--ts-config", str(config)], port) as server:
        cases = [
            (("POST", "/predictions/nope", b"{}", {"content-type": "application/json"}), 404, "ModelNotFoundException"),
            (("POST", "/predictions/echo/9.9", b"{}", {"content-type": "application/json"}), 404,
             "ModelVersionNotFoundException"),
            (("POST", "/predictions/echo", b"{not json", {"content-type": "application/json"}), 400,
             "BadRequestException"),
            (("POST", "/predictions/echo", b"x" * 5000, {}), 413, "RequestEntityTooLargeException"),
            (("GET", "/predictions/echo", None, {}), 405, "MethodNotAllowedException"),
            (("GET", "/no/such/path", None, {}), 404, "ResourceNotFoundException"),
        ]
        for (method, path, body, headers), status, kind in cases:
            got, response_headers, data = server.request(method, path, body, headers)
            error = json.loads(data)
            assert (got, error["type"]) == (status, kind), (path, data)
            assert error["code"] == status and error["message"]
            assert response_headers["content-type"] == "application/json"
            if status == 405:
                assert response_headers["allow"] == "POST, PUT"  # RFC 9110: a 405 says what is allowed
        assert server.predict("echo", {"after": "errors"})[0] == 200
        assert server.predict("echo/1.0", {"versioned": True})[0] == 200
        assert server.request("GET", "/ping")[0] == 200
    output = server.output()
    assert "unknown key 'some_typo_key'" in output and "effective configuration" in output


def test_full_queue_is_503_with_retry_after_and_nothing_accepted_is_lost(tmp_path, archives):
    config = tmp_path / "config.properties"
    config.write_text("job_queue_size=2\n")
    with Server([str(archives["echo"]), "--ts-config", str(config)], free_port()) as server:
        results = parallel(8, lambda i: server.predict("echo", {"i": i, "sleep": 0.3}))
        full = [(s, h, b) for s, h, b in results if s == 503]
        done = [(s, h, b) for s, h, b in results if s == 200]
        assert full and done and len(full) + len(done) == 8
        assert all("queue is full" in b["message"] and h["retry-after"] for _, h, b in full)
        assert all(b["echo"]["i"] in range(8) for _, _, b in done)


# --- workers ---------------------------------------------------------------------------------------


def test_broken_model_is_not_ready_and_says_why(archives):
    with Server([str(archives["broken"])], free_port(), wait_ready=False) as server:
        deadline = time.time() + 30
        message = ""
        while time.time() < deadline:
            status, headers, body = server.predict("broken", {"x": 1})
            message = body.get("message", "") if isinstance(body, dict) else ""
            if "corrupt" in message:
                break
            time.sleep(0.2)
        assert status == 503 and "weights file is corrupt" in message and headers["retry-after"]
        assert server.request("GET", "/v2/health/ready")[0] == 503
        assert server.request("GET", "/ping")[0] == 200


def test_worker_crash_mid_batch_fails_only_that_batch_and_worker_restarts(archives):
    with Server([str(archives["echo"])], free_port()) as server:
        first_pid = server.predict("echo", {"i": 0})[2]["pid"]
        started = time.perf_counter()
        status, _, body = server.predict("echo", {"crash": True})
        assert status == 500 and "died" in body["message"] and time.perf_counter() - started < 5
        server.wait_ready(30)
        status, _, body = server.predict("echo", {"i": 1})
        assert status == 200 and body["pid"] != first_pid


def test_kill_9_of_a_worker_under_load(archives):
    with Server([str(archives["echo"]), "--workers", "1"], free_port()) as server:
        worker = server.predict("echo", {"i": 0})[2]["pid"]
        statuses: list[int] = []

        def load(i):
            end = time.time() + 3
            while time.time() < end:
                statuses.append(server.predict("echo", {"i": i, "sleep": 0.01}, timeout=20)[0])

        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(load, i) for i in range(4)]
            wait_for(lambda: statuses.count(200) >= 20, what="the load under way")
            os.kill(worker, signal.SIGKILL)
            for future in futures:
                future.result()
        assert set(statuses) <= {200, 500, 503}, statuses
        assert statuses.count(500) <= 4, "more than the batch in flight failed"
        assert statuses.count(200) > 10
        server.wait_ready(30)
        assert server.predict("echo", {"after": 1})[0] == 200


def test_workers_of_two_models_get_disjoint_cores(archives):
    if len(ALLOWED) < 2:
        pytest.skip("needs two CPUs")
    with Server([str(archives["echo"]), str(archives["function"])], free_port()) as server:
        echo_cpus = server.predict("echo", {"i": 1})[2]["cpus"]
        status, _, body = server.predict("function", {"hello": 1})
        assert status == 200 and body == {"model": "function", "body": {"hello": 1}}  # function-style handler
        worker_pids = server.worker_pids()
        cpus = [set(os.sched_getaffinity(pid)) for pid in worker_pids]
        assert len(cpus) == 2 and not cpus[0] & cpus[1]
        assert set(echo_cpus) in cpus


def test_graceful_shutdown_finishes_requests_in_flight(archives, tmp_path):
    server = Server([str(archives["echo"])], free_port())
    workers = server.worker_pids()
    marker = tmp_path / "started"
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(server.predict, "echo", {"sleep": 1.0, "started": str(marker)})
        wait_for(handler_started(marker), what="the request in the worker")
        server.proc.send_signal(signal.SIGTERM)
        status, _, body = slow.result(timeout=20)
    assert status == 200 and body["echo"]["sleep"] == 1.0
    assert server.stop() == 0
    assert wait_for_exit(workers, 5)


def test_port_in_use_is_a_clear_error(archives):
    port = free_port()
    with Server([str(archives["echo"])], port):
        result = subprocess.run([sys.executable, "-m", "launchkit", "serve", str(archives["echo"]),
                                 "--inference-address", f"http://127.0.0.1:{port}"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode != 0 and "cannot listen on" in result.stderr and "Traceback" not in result.stderr
        # the management port taken: the error names that setting and its flag
        result = subprocess.run([sys.executable, "-m", "launchkit", "serve", str(archives["echo"]),
                                 "--inference-address", f"http://127.0.0.1:{free_port()}",
                                 "--management-address", f"http://127.0.0.1:{port}"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode != 0 and "management_address" in result.stderr
        assert "--management-address" in result.stderr and "Traceback" not in result.stderr
        # the metrics port taken, likewise
        result = subprocess.run([sys.executable, "-m", "launchkit", "serve", str(archives["echo"]),
                                 "--inference-address", f"http://127.0.0.1:{free_port()}",
                                 "--metrics-address", f"http://127.0.0.1:{port}"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode != 0 and "metrics_address" in result.stderr
        assert "--metrics-address" in result.stderr and "Traceback" not in result.stderr


def test_graceful_timeout_running_out_still_stops_everything(archives, tmp_path):
    marker = tmp_path / "started"
    server = Server([str(archives["echo"]), "--graceful-timeout", "1"], free_port())
    workers = server.worker_pids()
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(server.request, "POST", "/predictions/echo",
                           json.dumps({"sleep": 20, "started": str(marker)}).encode(), {"content-type": "application/json"})
        wait_for(handler_started(marker), what="the request in the worker")
        started = time.perf_counter()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=15) == 0
        stopped_after = time.perf_counter() - started
        status, _, body = slow.result(timeout=20)  # cut off: told so in JSON, not answered late
        assert status == 503 and "outlasted --graceful-timeout" in json.loads(body)["message"]
    server.stop()
    assert stopped_after < 4, f"took {stopped_after:.1f} s with --graceful-timeout 1 (the request sleeps 20 s)"
    assert wait_for_exit(workers, 5)
    assert "Traceback" not in server.output()


def wait_for_exit(pids: list[int], timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not any(os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] != "Z"
                   for pid in pids):
            return True
        time.sleep(0.05)
    return False


def test_restarts_back_off_and_are_counted(archives):
    with Server([str(archives["echo"])], free_port()) as server:
        for _ in range(3):
            assert server.predict("echo", {"crash": True})[0] == 500
            server.wait_ready(30)
        _, described = server.manage("GET", "/models/echo")
        assert described[0]["workers"][0]["restarts"] == 3
        assert server.metrics()[("launchkit_worker_restarts_total", (("model", "echo"), ("version", "1.0")))] == 3
        delays = [line.split("restarting in ")[1] for line in server.output().splitlines() if "restarting in" in line]
        assert delays == ["0.2 s", "0.5 s", "1 s"]  # consecutive failures back off (0.1 s doubling, capped at 30 s)


def test_unregister_model_timeout_answers_408_and_the_request_in_flight_still_finishes(tmp_path, archives):
    marker = tmp_path / "started"
    config = tmp_path / "config.properties"
    config.write_text("unregister_model_timeout=1\n")
    with Server([str(archives["echo"]), "--ts-config", str(config)], free_port()) as server:
        worker = server.worker_pids()
        with ThreadPoolExecutor(max_workers=1) as pool:
            slow = pool.submit(server.predict, "echo", {"sleep": 3, "started": str(marker)})
            wait_for(handler_started(marker), what="the request in the worker")
            started = time.perf_counter()
            status, body = server.manage("DELETE", "/models/echo")
            assert status == 408 and "unregister_model_timeout=1" in body["message"]
            assert time.perf_counter() - started < 2.5
            assert slow.result(timeout=20)[0] == 200  # accepted before the DELETE: answered, not dropped
        assert server.predict("echo", {"after": 1})[0] == 404  # routing stopped at once
        assert wait_for_exit(worker, 10)  # and the worker went once it had finished


@pytest.mark.parametrize("args, message", [
    (["/nonexistent/model.mar"], "does not exist"),
    (["--models", "all"], "needs --model-store"),
    (["--ts-config", "/nonexistent.properties"], "--ts-config"),
    (["--workers", "64", "/nonexistent-but-checked-later.mar"], "does not exist"),
])
def test_bad_serve_arguments(args, message):
    result = subprocess.run([sys.executable, "-m", "launchkit", "serve", *args], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr


def test_more_workers_than_cores_is_a_clear_error(archives):
    result = subprocess.run([sys.executable, "-m", "launchkit", "serve", str(archives["echo"]), "--workers",
                             str(len(ALLOWED) + 1)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Lower --workers" in result.stderr and "echo:" in result.stderr
    # in the server's terms: its flags and the management API's parameters, not launchkit run's
    assert "--allow-shared-cores" in result.stderr and "min_worker" in result.stderr
    assert "--ninstances" not in result.stderr and "instances" not in result.stderr


def test_model_store_models_and_model_config_yaml(tmp_path):
    store = tmp_path / "store"
    config_yaml = tmp_path / "model-config.yaml"
    config_yaml.write_text("batchSize: 4\nmaxBatchDelay: 300\n")
    make_archive(store, "echo_handler.py", "echo", config_file=str(config_yaml))
    with Server(["--model-store", str(store), "--models", "renamed=echo.mar"], free_port()) as server:
        results = parallel(8, lambda i: server.predict("renamed", {"i": i}))
        results += parallel(8, lambda i: server.predict("renamed", {"i": i}))
        assert all(status == 200 for status, _, _ in results)
        assert max(body["batch"] for _, _, body in results) > 1  # batchSize came from the archive's yaml
    assert "batch_size=4" in server.output()


# --- real models ---------------------------------------------------------------------------------


def test_examples_tiny_and_resnet18(example_archives, tmp_path):
    from PIL import Image

    image = tmp_path / "cat.png"
    Image.new("RGB", (320, 240), (200, 120, 40)).save(image)
    with Server([str(example_archives["tiny"]), str(example_archives["resnet18"])], free_port()) as server:
        raw = struct.pack("64f", *[i / 64 for i in range(64)])
        status, _, from_bytes = server.predict("tiny", raw, headers={"content-type": "application/octet-stream"})
        assert status == 200 and len(from_bytes) == 10
        status, _, from_json = server.predict("tiny", [i / 64 for i in range(64)])
        assert status == 200 and from_json == pytest.approx(from_bytes, rel=1e-5)
        assert from_bytes == pytest.approx(tiny_logits([i / 64 for i in range(64)])[0], abs=1e-4)  # the model, here
        assert server.predict("tiny", b"\x00" * 12, headers={"content-type": "application/octet-stream"})[0] == 400
        status, _, top5 = server.predict("resnet18", image.read_bytes(), headers={"content-type": "image/png"})
        assert status == 200 and len(top5) == 5 and all(key.startswith("class_") for key in top5)
        assert list(top5.values()) == sorted(top5.values(), reverse=True)
        status, _, body = server.predict("resnet18", b"\x89PNG\r\n\x1a\nbroken", headers={"content-type": "image/png"})
        assert status == 400 and "cannot read the input" in body["message"]


def test_archive_made_by_torch_model_archiver_loads_unchanged(tmp_path, example_archives):
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    assert archiver.exists(), "torch-model-archiver is a test dependency: run scripts/setup.sh (it installs .[test])"
    import zipfile

    with zipfile.ZipFile(example_archives["tiny"]) as bundle:
        bundle.extractall(tmp_path / "src")
    result = subprocess.run([str(archiver), "--model-name", "tsmodel", "--version", "2.0",
                             "--serialized-file", str(tmp_path / "src/tiny.pt"),
                             "--handler", str(tmp_path / "src/tiny_handler.py"),
                             "--export-path", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    with Server([str(tmp_path / "tsmodel.mar")], free_port()) as server:
        status, _, body = server.predict("tsmodel/2.0", [0.0] * 64)
        assert status == 200 and len(body) == 10


def test_cpu_launcher_args_are_honoured(tmp_path, archives):
    config = tmp_path / "config.properties"
    config.write_text("cpu_launcher_enable=true\ncpu_launcher_args=--memory-allocator jemalloc  --core-list 0\n")
    with Server([str(archives["echo"]), "--ts-config", str(config)], free_port()) as server:
        body = server.predict("echo", {"i": 1})[2]
        assert "jemalloc" in body["preload"] and body["cpus"] == [0] and body["threads"] == "1"
        # a small model's threads spin briefly, in the worker's own environment, and say so
        assert body["spin_turns"] == "10000" and body["wait_policy"] is None
        assert server.manage("GET", "/models/echo")[1][0]["workers"][0]["ompWaitPolicy"] == "brief"
    config.write_text("cpu_launcher_args=--omp-runtime gnu --omp-wait passive\n")
    with Server([str(archives["echo"]), "--ts-config", str(config)], free_port()) as server:
        body = server.predict("echo", {"i": 1})[2]
        assert body["spin_turns"] is None and body["wait_policy"] == "PASSIVE"
        assert server.manage("GET", "/models/echo")[1][0]["workers"][0]["ompWaitPolicy"] == "passive"


def test_eager_model_file_with_state_dict_and_base_handler(tmp_path):
    import torch

    model_py = tmp_path / "model.py"
    model_py.write_text("import torch\n\nclass Doubler(torch.nn.Module):\n    def __init__(self):\n"
                        "        super().__init__()\n        self.scale = torch.nn.Parameter(torch.zeros(1))\n\n"
                        "    def forward(self, x):\n        return x * self.scale\n")
    torch.save({"scale": torch.tensor([2.0])}, tmp_path / "weights.pt")
    handler = tmp_path / "plain_handler.py"
    handler.write_text("from ts.torch_handler.base_handler import BaseHandler\n\n\nclass Plain(BaseHandler):\n"
                       "    pass\n")
    make_archive(tmp_path / "out", str(handler), "eager", model_file=str(model_py),
                 serialized_file=str(tmp_path / "weights.pt"))
    with Server([str(tmp_path / "out" / "eager.mar")], free_port()) as server:
        status, _, body = server.predict("eager", [1.0, 2.5])
        assert status == 200 and body == [2.0, 5.0]


def test_no_model_serves_the_bundled_examples(tmp_path):
    with Server([], free_port(), timeout=180, env={"LAUNCHKIT_CACHE": str(tmp_path / "cache")}) as server:
        assert server.predict("tiny", [0.5] * 64)[0] == 200
        assert server.predict("resnet18", [[[0.0] * 224] * 224] * 3)[0] == 200
    built = sorted(path.name for path in (tmp_path / "cache").rglob("*.mar"))
    assert built == ["resnet18.mar", "tiny.mar"]  # built into the cache the environment names


def test_response_over_max_response_size_is_a_500(tmp_path, archives):
    config = tmp_path / "config.properties"
    config.write_text("max_response_size=50\n")
    with Server([str(archives["echo"]), "--ts-config", str(config)], free_port()) as server:
        status, _, body = server.predict("echo", {"i": 1})
        assert status == 500 and "max_response_size=50" in body["message"]


def test_wait_policy_follows_model_size_unless_told(tmp_path):
    from types import SimpleNamespace

    from launchkit.serve.fleet.fleet import SPIN_MODEL_BYTES, wait_policy

    small, big = tmp_path / "small.pt", tmp_path / "big.pt"
    small.write_bytes(b"x" * 1000)
    with open(big, "wb") as handle:
        handle.truncate(SPIN_MODEL_BYTES + 1)

    def model(name):
        return SimpleNamespace(model_dir=tmp_path, manifest=SimpleNamespace(serialized_file=name))

    assert wait_policy(model("small.pt"), "auto") == "brief"
    assert wait_policy(model("big.pt"), "auto") == "spin"
    assert wait_policy(model(None), "auto") == "brief"
    assert wait_policy(model("big.pt"), "passive") == "passive"


def test_a_small_model_at_batch_one_runs_on_one_core_unless_told(tmp_path):
    from types import SimpleNamespace

    from launchkit.launch.cpu_options import CpuOptions
    from launchkit.serve.fleet.fleet import ONE_CORE_MODEL_BYTES, cores_used

    small, big = tmp_path / "small.pt", tmp_path / "big.pt"
    small.write_bytes(b"x" * 1000)
    with open(big, "wb") as handle:
        handle.truncate(ONE_CORE_MODEL_BYTES)

    def model(name, batch_size=1, streams=1):
        return SimpleNamespace(model_dir=tmp_path, manifest=SimpleNamespace(serialized_file=name),
                               settings=SimpleNamespace(batch_size=batch_size, streams=streams))

    assert cores_used(model("small.pt"), CpuOptions()) == 1
    assert cores_used(model(None), CpuOptions()) == 1  # no weights file (a handler that builds its model)
    assert cores_used(model("big.pt"), CpuOptions()) is None  # 1 MiB and over: its whole share
    assert cores_used(model("small.pt", batch_size=8), CpuOptions()) is None  # batches gain from threads
    assert cores_used(model("small.pt", streams=2), CpuOptions()) is None  # streams need their cores
    assert cores_used(model("small.pt"), CpuOptions(ncores_per_instance=2)) is None  # the user's count decides


def test_a_served_small_models_worker_runs_on_one_core_and_the_user_can_give_it_more(tmp_path, example_archives):
    with Server([str(example_archives["tiny"])], free_port()) as server:
        worker = server.manage("GET", "/models/tiny")[1][0]["workers"][0]
        assert len(worker["cores"]) == 1 and worker["threads"] == 1
        assert server.predict("tiny", [0.5] * 64)[0] == 200
        assert "tiny: each worker on one core, one thread" in server.output()
    if len(os.sched_getaffinity(0)) < 2:
        return
    config = tmp_path / "config.properties"
    config.write_text("cpu_launcher_args=--ncores-per-instance 2\n")
    with Server([str(example_archives["tiny"]), "--ts-config", str(config)], free_port()) as server:
        worker = server.manage("GET", "/models/tiny")[1][0]["workers"][0]
        assert len(worker["cores"]) == 2 and worker["threads"] == 2


def test_response_timeout_kills_the_worker_and_answers_500(tmp_path, archives):
    config = tmp_path / "config.properties"
    config.write_text('models={"echo": {"1.0": {"responseTimeout": 1}}}\n')
    with Server([str(archives["echo"]), "--ts-config", str(config)], free_port()) as server:
        reply = server.predict("echo", {"i": 0})
        assert reply[0] == 200, reply
        first = reply[2]["pid"]
        started = time.perf_counter()
        status, _, body = server.predict("echo", {"sleep": 5})
        assert status == 500 and "did not respond in 1 s" in body["message"]
        assert time.perf_counter() - started < 4
        assert server.request("GET", "/v2/health/ready")[0] == 503  # out of service at once
        server.wait_ready(30)
        status, _, body = server.predict("echo", {"i": 1})
        assert status == 200 and body["pid"] != first


def test_large_bodies_travel_out_of_band_intact(archives):
    """Bodies of 64 KiB and more skip the pickle (protocol 5 buffers): they must arrive byte for byte."""
    with Server([str(archives["echo"]), "--batch-size", "2", "--max-batch-delay", "20"], free_port()) as server:
        raw = bytes(range(256)) * 800  # 200 KiB
        big_json = {"values": list(range(20000))}

        def call(i):
            return server.predict("echo", raw) if i % 2 else server.predict("echo", big_json)

        for i, (status, _, body) in enumerate(parallel(4, call)):
            assert status == 200
            if i % 2:
                assert body["echo"].encode("latin-1") == raw
            else:
                assert body["echo"] == big_json
