"""The server holds under hostile input: each finding of the security review, reproduced against a real
server on loopback, with the outcome asserted (a 4xx naming the limit, worker and frontend alive, disk
flat, other clients served)."""

from __future__ import annotations

import hashlib
import json
import socket
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from tests.serve.conftest import Server, free_port, handler_started, make_archive, wait_for


def limits_config(tmp_path: Path, **entries: object) -> str:
    path = tmp_path / "config.properties"
    path.write_text("".join(f"{key}={value}\n" for key, value in entries.items()))
    return str(path)


def raw(port: int, payload: bytes, read_timeout: float = 10.0) -> bytes:
    """Send raw bytes, return what comes back until the server closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        sock.sendall(payload)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


def one_answer(port: int, payload: bytes, read_timeout: float = 10.0) -> bytes:
    """Send raw bytes, return the first whole answer (its head and Content-Length body) as soon as it has
    come: a refused request's connection may linger open for a while (it drains what the client still sends)."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        sock.sendall(payload)
        data = b""
        while True:
            head, ended, body = data.partition(b"\r\n\r\n")
            if ended:
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                               if line.lower().startswith(b"content-length:")), 0)
                if len(body) >= length:
                    return data
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk


# --- high ---------------------------------------------------------------------------------------------------------


def test_deeply_nested_json_is_a_400_and_the_worker_lives(archives):
    with Server([str(archives["echo"])], free_port()) as server:
        pid = server.predict("echo", {"i": 0})[2]["pid"]
        nested = b"[" * 100_000 + b"]" * 100_000
        for _ in range(5):
            status, _, body = server.request("POST", "/predictions/echo", nested, {"content-type": "application/json"})
            assert status == 400 and b"nested too deeply" in body
        status, _, body = server.request("POST", "/v2/models/echo/infer", nested, {"content-type": "application/json"})
        assert status == 400 and "nested too deeply" in json.loads(body)["error"]
        status, _, body = server.predict("echo", {"after": 1})
        assert status == 200 and body["pid"] == pid  # the same worker: never restarted
        assert "Traceback" not in server.output()


def test_v2_shapes_are_checked_before_any_row_is_built(archives):
    with Server([str(archives["echo"])], free_port()) as server:
        before = psutil.Process(server.proc.pid).memory_info().rss
        started = time.perf_counter()
        for shape in ([8, 1000000, 0], [100000, 100000, 1]):
            status, _, body = server.request("POST", "/v2/models/echo/infer", json.dumps(
                {"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": []}]}).encode())
            assert status == 400, body
        assert time.perf_counter() - started < 1.0
        assert psutil.Process(server.proc.pid).memory_info().rss - before < 20 * 2**20
        assert server.predict("echo", {"ok": 1})[0] == 200


def test_header_limits(tmp_path, archives):
    config = limits_config(tmp_path, max_header_size=4096, max_headers=20)
    with Server([str(archives["echo"]), "--ts-config", config], free_port()) as server:
        big = b"POST /predictions/echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
        answer = one_answer(server.port, big)
        assert answer.startswith(b"HTTP/1.1 431") and b"max_header_size=4096" in answer
        many = b"GET /ping HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(50)) + b"\r\n"
        answer = one_answer(server.port, many)
        assert answer.startswith(b"HTTP/1.1 431") and b"max_headers=20" in answer
        assert server.predict("echo", {"ok": 1})[0] == 200
        assert psutil.Process(server.worker_pids()[0]).memory_info().rss < 500 * 2**20


def test_slow_and_silent_clients_are_timed_out(tmp_path, archives):
    config = limits_config(tmp_path, header_timeout=1, body_timeout=1, keep_alive_timeout=1)
    with Server([str(archives["echo"]), "--ts-config", config], free_port()) as server:
        def drip() -> tuple[bytes, float]:
            started = time.perf_counter()
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                try:
                    for byte in b"POST /predictions/echo HTTP/1.1\r\nHost: x\r\n":
                        sock.sendall(bytes([byte]))
                        time.sleep(0.1)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return sock.recv(4096), time.perf_counter() - started

        answer, took = drip()
        assert answer.startswith(b"HTTP/1.1 408") and b"request headers" in answer and took < 4
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as silent:  # never sends a byte
            started = time.perf_counter()
            assert silent.recv(4096).startswith(b"HTTP/1.1 408") and time.perf_counter() - started < 4
        short = one_answer(server.port, b"POST /predictions/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: 1000\r\n\r\n{\"x\": 1}")
        assert short.startswith(b"HTTP/1.1 408") and b"request body" in short
        assert server.predict("echo", {"ok": 1})[0] == 200


def test_connection_limit_and_open_files(tmp_path, archives):
    config = limits_config(tmp_path, max_connections=20)
    with Server([str(archives["echo"]), "--ts-config", config], free_port()) as server:
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(25)]
        try:
            # the server has accepted all 25 (the limit answers 503 after accepting, not before)
            wait_for(lambda: sum(1 for c in psutil.Process(server.proc.pid).net_connections()
                                 if c.laddr and c.laddr.port == server.port and c.status == "ESTABLISHED") >= 25,
                     what="25 connections accepted")
            statuses = []
            for sock in held[-3:]:
                sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
                statuses.append(sock.recv(4096).split(b"\r\n", 1)[0])
            assert all(b"503" in status for status in statuses)
        finally:
            for sock in held:
                sock.close()
        # once they are gone (as soon as the server has seen them close), everyone is served again
        wait_for(lambda: server.request("GET", "/ping")[0] == 200, timeout=10, what="served again")
        limits = Path(f"/proc/{server.proc.pid}/limits").read_text()
        soft = int(next(line for line in limits.splitlines() if line.startswith("Max open files")).split()[3])
        assert soft >= min(3 * 20 + 1024, psutil.Process().rlimit(psutil.RLIMIT_NOFILE)[1])
        assert "limits: headers" in server.output()  # the effective limits are in the start-up report


# --- medium -------------------------------------------------------------------------------------------------------


def _bomb(path: Path, megabytes: int = 200) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"modelName": "bomb", "handler": "h.py"}}))
        bundle.writestr("h.py", "class H:\n    def handle(self, data, context):\n        return data\n")
        bundle.writestr("zeros.bin", b"\0" * (megabytes << 20))
    return path


def _workdir_size(server: Server) -> int:
    """Bytes under the servers' working folders (where archives are extracted)."""
    roots = [p for p in Path("/tmp").glob("launchkit-serve-*") if p.is_dir()]
    return sum(f.stat().st_size for root in roots for f in root.rglob("*") if f.is_file())


def test_archive_bombs_are_refused_from_the_directory_and_leave_nothing(tmp_path, archives):
    store = tmp_path / "store"
    store.mkdir()
    _bomb(store / "bomb.mar")
    many = store / "many.mar"
    with zipfile.ZipFile(many, "w") as bundle:
        bundle.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"modelName": "many", "handler": "h.py"}}))
        for index in range(300):
            bundle.writestr(f"f{index}.txt", "x")
    nested = store / "nested.mar"
    with zipfile.ZipFile(nested, "w") as bundle:
        bundle.writestr("MAR-INF/MANIFEST.json", "[" * 50_000 + "]" * 50_000)
    config = limits_config(tmp_path, max_archive_entries=100)
    with Server([str(archives["echo"]), "--model-store", str(store), "--ts-config", config], free_port()) as server:
        before = _workdir_size(server)
        for _ in range(3):
            status, body = server.manage("POST", "/models?url=bomb.mar")
            assert status == 400 and "max_archive_ratio" in body["message"], body
        status, body = server.manage("POST", "/models?url=many.mar")
        assert status == 400 and "max_archive_entries" in body["message"]
        status, body = server.manage("POST", "/models?url=nested.mar")
        assert status == 400 and "nested too deeply" in body["message"]
        assert _workdir_size(server) - before < 2**20  # nothing was written, nothing leaked
        assert server.predict("echo", {"ok": 1})[0] == 200


def test_the_pin_is_checked_before_extraction_and_tied_to_the_name(tmp_path, archives):
    good = archives["echo"]
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    store = tmp_path / "store"
    altered = make_archive(store, "function_handler.py:handle", "echo", version="9.9")  # claims another version
    config = tmp_path / "config.properties"
    config.write_text('models={"echo": {"1.0": {"sha256": "%s"}}}\n' % digest)
    with Server([str(good), "--model-store", str(store), "--ts-config", str(config)], free_port()) as server:
        status, body = server.manage("POST", f"/models?url={altered.name}")
        assert status == 400 and "pinned" in body["message"], body
        assert [m["modelName"] for m in server.manage("GET", "/models")[1]["models"]] == ["echo"]
        assert server.manage("GET", "/models/echo/9.9")[0] == 404  # not the new default either


def test_unregistering_a_folder_archive_keeps_the_folder(tmp_path):
    store = tmp_path / "store"
    folder = make_archive(store, "echo_handler.py", "plain", archive_format="no-archive")
    with Server(["--model-store", str(store)], free_port()) as server:
        assert server.manage("POST", "/models?url=plain")[0] == 200
        assert server.predict("plain", {"x": 1})[0] == 200
        assert server.manage("DELETE", "/models/plain")[0] == 200
    assert (folder / "MAR-INF" / "MANIFEST.json").exists() and (folder / "echo_handler.py").exists()


def test_nothing_listens_for_workers(archives):
    started = time.time()
    with Server([str(archives["echo"])], free_port()) as server:
        frontend = psutil.Process(server.proc.pid)
        listening_unix = [c for c in frontend.net_connections(kind="unix") if c.laddr]
        assert listening_unix == [], listening_unix  # a same-user process has nothing to connect to
        ours = [d for d in Path("/tmp").glob("launchkit-serve-*") if d.stat().st_mtime >= started - 1]
        assert ours and not any((d / "workers.sock").exists() for d in ours)


def test_max_response_size_holds_on_v2_too(tmp_path, archives):
    config = limits_config(tmp_path, max_response_size=2000)
    with Server([str(archives["echo"]), "--ts-config", config], free_port()) as server:
        request = {"inputs": [{"name": "x", "shape": [40], "datatype": "FP32", "data": [1.0] * 40}]}  # 40 echoes
        status, _, body = server.request("POST", "/v2/models/echo/infer", json.dumps(request).encode())
        assert status == 500 and "max_response_size=2000" in json.loads(body)["error"]


# --- low ----------------------------------------------------------------------------------------------------------


def test_manifest_paths_stay_inside_the_archive(tmp_path, archives):
    store = tmp_path / "store"
    store.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET first line\n")
    for name, model in (("escape", {"modelName": "escape", "handler": "../../../tmp/x.py"}),
                        ("absolute", {"modelName": "absolute", "handler": "/tmp/x.py"}),
                        ("config", {"modelName": "config", "handler": "h.py", "configFile": str(secret)})):
        with zipfile.ZipFile(store / f"{name}.mar", "w") as bundle:
            bundle.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": model}))
    with Server([str(archives["echo"]), "--model-store", str(store)], free_port()) as server:
        for name in ("escape", "absolute", "config"):
            status, body = server.manage("POST", f"/models?url={name}.mar")
            assert status == 400 and "outside the archive" in body["message"], body
            assert "TOP-SECRET" not in body["message"]


def test_model_names_are_validated(archives, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / "echo.mar").write_bytes(archives["echo"].read_bytes())
    with Server(["--model-store", str(store)], free_port()) as server:
        status, body = server.manage("POST", "/models?url=echo.mar&model_name=a%2Fb")
        assert status == 400 and "not usable in a URL" in body["message"]
        assert server.manage("GET", "/models")[1] == {"models": []}


def test_handlers_do_not_see_credentials(archives):
    with Server([str(archives["echo"])], free_port(), env={"LAUNCHKIT_INFERENCE_TOKEN": "s3cret"}) as server:
        status, _, body = server.predict("echo", {"x": 1}, headers={"authorization": "Bearer s3cret", "x-test": "t"})
        assert status == 200 and body["authorization"] is None and body["header"] == "t"


def test_management_refuses_foreign_hosts_and_cross_origin_requests(archives):
    with Server([str(archives["echo"])], free_port()) as server:
        assert server.manage("GET", "/models", headers={"host": "evil.example:8081"})[0] == 403
        status, body = server.manage("GET", "/models", headers={"origin": "http://evil.example"})
        assert status == 403 and "cross-origin" in body["message"]
        assert server.manage("GET", "/models", headers={"host": f"localhost:{server.management_port}"})[0] == 200


def test_a_batch_waiting_ahead_is_timed_from_when_it_starts(tmp_path, archives):
    """Two requests of 0.7 s each at a worker with response_timeout=1: the second waits ahead in the
    worker's socket for 0.7 s and ends 1.4 s after it was sent, yet is within its own second."""
    store = tmp_path / "store"
    make_archive(store, "echo_handler.py", "steady")
    with Server(["--model-store", str(store)], free_port()) as server:
        assert server.manage("POST", "/models?url=steady.mar&response_timeout=1")[0] == 200
        workers = server.worker_pids()
        with ThreadPoolExecutor(max_workers=2) as pool:
            calls = [pool.submit(server.predict, "steady", {"sleep": 0.7, "n": n}, None, 30) for n in range(2)]
            answers = [call.result() for call in calls]
        assert [status for status, _, _ in answers] == [200, 200]
        assert server.worker_pids() == workers  # nobody was killed


def test_queued_requests_wait_for_a_worker_killed_by_the_response_timeout(tmp_path, archives):
    store = tmp_path / "store"
    make_archive(store, "echo_handler.py", "slowpoke")
    with Server(["--model-store", str(store)], free_port()) as server:
        assert server.manage("POST", "/models?url=slowpoke.mar&response_timeout=1")[0] == 200
        marker = tmp_path / "started"
        with ThreadPoolExecutor(max_workers=2) as pool:
            stuck = pool.submit(server.predict, "slowpoke", {"sleep": 5, "started": str(marker)}, None, 30)
            wait_for(handler_started(marker), what="the stuck request in the worker")
            queued = pool.submit(server.predict, "slowpoke", {"queued": 1}, None, 60)
            assert stuck.result()[0] == 500  # its batch overstayed: answered, worker killed
            status, _, body = queued.result()
        assert status == 200 and body["echo"] == {"queued": 1}  # waited for the restart, not a 503
