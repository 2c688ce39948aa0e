"""The management API on a real server: register, describe, list, versions, scale, unregister."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.serve.conftest import Server, free_port, handler_started, make_archive, wait_for

MACHINES = Path(__file__).parent.parent / "fixtures" / "machines"


@pytest.fixture(scope="module")
def store(tmp_path_factory, archives) -> Path:
    folder = tmp_path_factory.mktemp("store")
    make_archive(folder, "echo_handler.py", "echo")
    make_archive(folder / "v2", "echo_handler.py", "echo", version="2.0")
    (folder / "v2" / "echo.mar").rename(folder / "echo-v2.mar")
    make_archive(folder, "function_handler.py:handle", "function")
    make_archive(folder, "broken_handler.py", "broken")
    return folder


def unpinned(tmp_path: Path, extra: str = "") -> list[str]:
    """Plan workers on a recorded 4-core machine without pinning them: room for several models here."""
    config = tmp_path / "config.properties"
    config.write_text("cpu_launcher_enable=false\n" + extra)
    return ["--ts-config", str(config), "--topology-root", str(MACHINES / "desktop-4c-adjacent")]


def settled(server) -> bool:
    """Every model has exactly its workers, all ready: no replacement or retirement under way."""
    for entry in server.manage("GET", "/models")[1]["models"]:
        for model in server.manage("GET", f"/models/{entry['modelName']}/all")[1]:
            states = [worker["status"] for worker in model["workers"]]
            if len(states) != model["minWorkers"] or set(states) - {"READY"}:
                return False
    return True


def test_register_versions_describe_list_and_unregister(tmp_path, store):
    args = ["--model-store", str(store), "--models", "echo=echo.mar", *unpinned(tmp_path)]
    with Server(args, free_port()) as server:
        assert server.manage("GET", "/models") == (200, {"models": [{"modelName": "echo", "modelUrl": str(store / "echo.mar")}]})
        status, body = server.manage("POST", "/models?url=function.mar&batch_size=2&max_batch_delay=5")
        assert status == 200 and "registered with 1 initial workers" in body["status"], body
        assert server.predict("function", {"x": 1})[0] == 200
        status, body = server.manage("POST", "/models?url=function.mar")
        assert status == 409 and body["type"] == "ConflictStatusException"

        status, body = server.manage("POST", "/models?url=echo-v2.mar&synchronous=false")
        assert status == 200 and "Processing worker updates" in body["status"]
        wait_for(lambda: server.request("GET", "/v2/models/echo/versions/2.0/ready")[0] == 200)
        wait_for(lambda: settled(server))  # the other workers moved to their new cores

        status, page = server.manage("GET", "/models?limit=1")
        assert page["models"][0]["modelName"] == "echo" and page["nextPageToken"] == "1"
        status, page = server.manage("GET", "/models?limit=1&next_page_token=1")
        assert [m["modelName"] for m in page["models"]] == ["function"] and "nextPageToken" not in page

        status, described = server.manage("GET", "/models/function")
        function = described[0]
        assert (function["batchSize"], function["maxBatchDelay"], function["loadedAtStartup"]) == (2, 5.0, False)
        assert function["jobQueueStatus"] == {"remainingCapacity": 100, "pendingRequests": 0}
        worker = function["workers"][0]
        assert worker["status"] == "READY" and worker["pid"] > 0 and worker["memoryUsage"] > 0
        assert worker["cores"] and worker["threads"] >= 1 and worker["startTime"]
        status, both = server.manage("GET", "/models/echo/all")
        assert sorted(m["modelVersion"] for m in both) == ["1.0", "2.0"]
        assert [m["default"] for m in sorted(both, key=lambda m: m["modelVersion"])] == [True, False]

        # version routing: the default, an explicit version, then a new default
        pid_v1 = server.predict("echo", {"i": 1})[2]["pid"]
        pid_v2 = server.predict("echo/2.0", {"i": 2})[2]["pid"]
        assert pid_v1 != pid_v2
        assert server.predict("echo/1.0", {"i": 3})[2]["pid"] == pid_v1
        assert server.manage("PUT", "/models/echo/2.0/set-default")[0] == 200
        assert server.predict("echo", {"i": 4})[2]["pid"] == pid_v2
        assert server.manage("PUT", "/models/echo/9.9/set-default")[0] == 404

        status, body = server.manage("DELETE", "/models/echo/2.0")
        assert status == 409 and "default" in body["message"]
        assert server.manage("DELETE", "/models/echo/1.0")[0] == 200
        assert server.predict("echo/1.0", {"i": 5})[0] == 404
        assert server.predict("echo", {"i": 6})[2]["pid"] == pid_v2
        assert server.manage("DELETE", "/models/function")[0] == 200
        assert server.manage("GET", "/models/function")[0] == 404
        assert "unregistering function" in server.output()


def test_bad_management_requests_get_clear_4xx(tmp_path, store):
    args = ["--model-store", str(store), "--models", "echo=echo.mar", *unpinned(tmp_path)]
    with Server(args, free_port()) as server:
        cases = [
            ("GET", "/models/nope", 404, "not loaded"),
            ("GET", "/models/echo/7.0", 404, "no version"),
            ("POST", "/models", 400, "url= is required"),
            ("POST", "/models?url=echo.mar&batch_size=0", 400, "batch_size=0 must be at least 1"),
            ("POST", "/models?url=echo.mar&batch_size=two", 400, "not an integer"),
            ("POST", "/models?url=echo.mar&bogus=1", 400, "unknown parameter(s) bogus"),
            ("POST", "/models?url=missing.mar", 404, "no such archive"),
            ("PUT", "/models/echo?min_worker=2&max_worker=1", 400, "below min_worker"),
            ("PATCH", "/models", 405, "use GET, POST"),
            ("GET", "/elsewhere", 404, "no such endpoint"),
        ]
        for method, path, expected, message in cases:
            status, body = server.manage(method, path)
            assert (status, message in (body or {}).get("message", "")) == (expected, True), (method, path, body)
        status, body = server.manage("POST", "/models?url=broken.mar")
        assert status == 500 and "could not be started" in body["message"]
        assert server.manage("GET", "/models/broken")[0] == 404
        # nothing accepted was lost: echo still serves with its one worker
        assert server.predict("echo", {"ok": 1})[0] == 200
        assert len(server.manage("GET", "/models/echo")[1][0]["workers"]) == 1


def test_scale_up_and_down_under_load_drops_nothing(archives):
    with Server([str(archives["echo"])], free_port()) as server:
        statuses: list[int] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                statuses.append(server.predict("echo", {"n": len(statuses)})[0])

        initial_cores = server.manage("GET", "/models/echo")[1][0]["workers"][0]["cores"]
        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: len(statuses) >= 20, what="the load under way")
            status, body = server.manage("PUT", "/models/echo?min_worker=2&synchronous=true")
            assert status == 200 and "scaled to 2" in body["status"], body
            wait_for(lambda: len(server.manage("GET", "/models/echo")[1][0]["workers"]) == 2)
            workers = server.manage("GET", "/models/echo")[1][0]["workers"]
            cores = [set(w["cores"]) for w in workers]
            assert len(cores) == 2 and not (cores[0] & cores[1])  # re-planned: disjoint cores
            served = len(statuses)
            wait_for(lambda: len(statuses) >= served + 20, what="requests answered by two workers")
            status, body = server.manage("PUT", "/models/echo?min_worker=1&synchronous=true")
            assert status == 200, body
            wait_for(lambda: len(server.manage("GET", "/models/echo")[1][0]["workers"]) == 1)
            served = len(statuses)
            wait_for(lambda: len(statuses) >= served + 20, what="requests answered after the scale-down")
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert len(statuses) > 50 and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
        final = server.manage("GET", "/models/echo")[1][0]
        assert final["minWorkers"] == 1 and final["workers"][0]["cores"] == initial_cores  # all its cores back


def test_unregister_drains_queued_requests_first(archives, tmp_path):
    marker = tmp_path / "started"
    with Server([str(archives["echo"])], free_port()) as server:
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(
            server.predict("echo", {"sleep": 0.4, "started": str(marker)})[0])) for _ in range(3)]
        for thread in threads:
            thread.start()
        # all three accepted: one running in the worker, one waiting ahead in its socket, one in the model's queue
        wait_for(lambda: handler_started(marker)() and server.manage("GET", "/models/echo")[1][0]["jobQueueStatus"][
            "pendingRequests"] == 1)
        started = time.perf_counter()
        status, body = server.manage("DELETE", "/models/echo")
        assert status == 200, body
        assert time.perf_counter() - started > 0.5  # it waited for the queue
        for thread in threads:
            thread.join()
        assert results == [200, 200, 200]
        assert server.predict("echo", {"late": 1})[0] == 404
