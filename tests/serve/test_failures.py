"""Models that cannot load, models with no worker, stopping twice, a store with no model: told plainly."""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from tests.serve.conftest import Server, free_port, handler_started, wait_for


def test_a_model_that_cannot_load_is_marked_failed_everywhere(tmp_path, archives):
    config = tmp_path / "config.properties"
    config.write_text("max_load_failures=2\n")
    with Server([str(archives["broken"]), str(archives["echo"]), "--ts-config", str(config)], free_port(),
                wait_ready=False) as server:
        deadline = time.time() + 60
        while time.time() < deadline and server.request("GET", "/ping")[0] != 500:
            time.sleep(0.2)
        status, _, body = server.request("GET", "/ping")
        ping = json.loads(body)
        assert status == 500 and ping["status"] == "Unhealthy"
        assert "weights file is corrupt" in ping["failedModels"]["broken/1.0"]
        assert server.request("GET", "/v2/health/ready")[0] == 503
        _, described = server.manage("GET", "/models/broken")
        assert "weights file is corrupt" in described[0]["failed"] and described[0]["workers"][0]["status"] in (
            "FAILED", "STARTING")
        assert server.predict("echo", {"still": "serving"})[0] == 200  # the other model is unaffected
        status, _, body = server.predict("broken", {"x": 1})
        assert status == 503 and "weights file is corrupt" in body["message"]
        # the worker's line and the server's "marked failed" line come from two processes: wait for both
        wait_for(lambda: "load attempt 2 failed" in server.output() and "is marked failed" in server.output(),
                 what="a second load attempt and the server's marked-failed line")
        output = server.output()
        assert output.count("Traceback") == 1, "one traceback, then a line per retry"
        assert "load attempt 2 failed (model marked failed)" in output and "model broken/1.0 is marked failed" in output
        assert server.stop() == 0


def test_no_worker_configured_is_a_503_that_says_so(archives, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / "echo.mar").write_bytes(archives["echo"].read_bytes())
    with Server(["--model-store", str(store)], free_port()) as server:  # a model store alone: no model yet
        assert server.manage("GET", "/models")[1] == {"models": []}
        assert server.request("GET", "/ping")[0] == 200
        status, body = server.manage("POST", "/models?url=echo.mar&initial_workers=0")
        assert status == 200, body
        status, _, body = server.predict("echo", {"x": 1})
        assert status == 503 and "no worker configured" in body["message"] and "min_worker=1" in body["message"]
        assert server.manage("PUT", "/models/echo?min_worker=1&synchronous=true")[0] == 200
        assert server.predict("echo", {"x": 1})[0] == 200


def test_models_all_loads_every_archive_of_the_store(archives, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    for name in ("echo", "function"):
        (store / f"{name}.mar").write_bytes(archives[name].read_bytes())
    with Server(["--model-store", str(store), "--models", "all"], free_port()) as server:
        names = sorted(entry["modelName"] for entry in server.manage("GET", "/models")[1]["models"])
        assert names == ["echo", "function"]


def test_a_second_stop_signal_stops_at_once(archives, tmp_path):
    server = Server([str(archives["echo"]), "--graceful-timeout", "60"], free_port())
    workers = server.worker_pids()
    marker = tmp_path / "started"
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(server.predict, "echo", {"sleep": 30, "started": str(marker)}, timeout=60)
        wait_for(handler_started(marker), what="the request in the worker")
        begun = time.perf_counter()
        server.proc.send_signal(signal.SIGINT)
        wait_for(lambda: "stop signal: finishing the requests in flight" in server.output(), what="the first signal")
        server.proc.send_signal(signal.SIGINT)  # the request in flight would hold the first one for 30 s
        server.proc.wait(timeout=20)
        assert time.perf_counter() - begun < 5
    server.stop()
    deadline = time.time() + 5
    while time.time() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)
    assert "second stop signal" in server.output()


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
