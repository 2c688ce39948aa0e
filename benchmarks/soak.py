"""A soak with chaos: mixed load on a live `launchkit serve` while workers are killed, models scaled,
versions registered and unregistered, and clients disconnect, send slowly or send too much.

    python benchmarks/soak.py [--minutes 20] [--clients 6] [--fault-every 5] [--no-resnet]

Models: tiny (the bundled MLP), echo (answers each request with its own body) and, unless
--no-resnet, resnet18 (its sample photo). Requests: tiny over /predictions, KServe v2 JSON and v2
binary; echo over /predictions and KServe v1; resnet18 over /predictions; half the clients keep
their connection, half open one per request. Every request carries an id: echo answers it back,
tiny's answer must equal the answer for the same input before the faults, so a request answered
with another's result is caught.

The first quarter runs without faults (the baseline); then one fault every --fault-every seconds,
in turn: SIGKILL a worker, scale tiny to 2 workers and back, register echo 2.0 and unregister it,
a client that disconnects mid-body, a client that sends its body over 2 s (it must be answered),
a body over max_request_size (it must get a 413).

Each request ends correct, refused with a defined status and a reason (500 "worker ... died" for
the batch a killed worker held, 503 while a model has no worker, 413 for the oversize body), wrong
(a 200 with another answer) or lost (no answer, a connection error). Verdicts: none lost, none
wrong; the frontend's memory and open files after the run within +5 % of after the warm-up; p99
of requests outside fault windows (a fault and the 2 s after it) within 1.5x the baseline's.
Every kind of fault must have been made at least once (a run too short for six faults fails).
``--torchserve``: then the same soak against TorchServe 0.12 live (/predictions only), side by
side. Exit 1 when a request was lost or wrong, a kind of fault never made, or the server did not
stop cleanly. `.ci/run` runs two minutes of it (tiny and echo). Writes results/<ts>-soak/.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import itertools
import json
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _report import absolute, markdown_table, results_dir, write  # noqa: E402
from launchkit.core.ports import free_port  # noqa: E402

MAX_REQUEST_SIZE = 1 << 20
FAULT_WINDOW_S = 2.0
# what each kind of fault says when made, in the order they are made
FAULT_KINDS = ("SIGKILL", "scale tiny", "echo 2.0", "disconnected", "slow sender", "oversize")
TINY_INPUTS = [[round(random.Random(seed).uniform(-1, 1), 4) for _ in range(64)] for seed in range(8)]


@dataclass
class Ledger:
    """Every request's fate, and when faults happened."""

    outcomes: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (sent, seconds) of correct answers
    faults: list[tuple[float, str]] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, outcome: str, reason: str = "", sent: float = 0.0, took: float = 0.0) -> None:
        with self.lock:
            self.outcomes[outcome] += 1
            if reason:
                self.reasons[f"{outcome}: {reason}"] += 1
            if outcome == "correct":
                self.latencies.append((sent, took))
            elif outcome in ("wrong", "lost") and len(self.examples) < 10:
                self.examples.append(reason)


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path, peer: str = "launchkit") -> None:
        from launchkit.archive.writing import ArchiveRequest, create_archive
        from launchkit.examples.build import build_example

        self.args = args
        handler = str(ROOT / "tests" / "fixtures" / "handlers" / "echo_handler.py")
        self.store = workdir / "store"
        self.store.mkdir()
        for version in ("1.0", "2.0"):
            folder = workdir / f"echo-{version}"
            folder.mkdir()
            made = create_archive(ArchiveRequest(model_name="echo", version=version, handler=handler,
                                                 export_path=str(folder), force=True))
            Path(made).rename(self.store / f"echo-{version}.mar")
        models = ["tiny"] + ([] if args.no_resnet else ["resnet18"])
        for name in models:
            Path(build_example(name, str(self.store))).rename(self.store / f"{name}.mar")
        self.photo = b""
        if not args.no_resnet:
            with zipfile.ZipFile(self.store / "resnet18.mar") as bundle:
                self.photo = bundle.read("sample.jpg")
        self.peer = peer
        self.ledger = Ledger()
        self.stop = threading.Event()
        self.ids = itertools.count(1)
        self.expected: dict[str, object] = {}
        # TorchServe answers /predictions only (its KServe routes need the KServe wrapper)
        self.kinds = ["tiny", "tiny-v2", "tiny-v2-binary", "echo", "echo-v1"] if peer == "launchkit" else \
            ["tiny", "echo"]
        if peer == "torchserve":
            self._start_torchserve(models, workdir)
            return
        self.port, self.management = free_port(), free_port()
        config = workdir / "config.properties"
        config.write_text(f"max_request_size={MAX_REQUEST_SIZE}\nallow_shared_cores=true\n")
        loads = ",".join([f"{name}={name}.mar" for name in models] + ["echo=echo-1.0.mar"])
        self.log_path = workdir / "serve.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115
        self.server = subprocess.Popen(
            [sys.executable, "-m", "launchkit", "serve", "--model-store", str(self.store), "--models", loads,
             "--ts-config", str(config), "--inference-address", f"http://127.0.0.1:{self.port}",
             "--management-address", f"http://127.0.0.1:{self.management}",
             "--metrics-address", f"http://127.0.0.1:{free_port()}"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.frontend_pid = self.server.pid
        self._wait_ready()

    def _start_torchserve(self, models: list[str], workdir: Path) -> None:
        """TorchServe 0.12 (benchmarks/peers.py) on the same archives, the same request-size limit."""
        from peers import TorchServe

        echo = workdir / "echo.mar"
        shutil.copy(self.store / "echo-1.0.mar", echo)
        self.torchserve = TorchServe([self.store / f"{name}.mar" for name in models] + [echo],
                                     config={"max_request_size": str(MAX_REQUEST_SIZE),
                                             "enable_model_api": "true"},  # 0.12 refuses registration otherwise
                                     log=workdir / "serve.log")
        self.log_path = workdir / "serve.log"
        self.torchserve.wait_ready()
        shutil.copy(self.store / "echo-2.0.mar", self.torchserve.folder / "store" / "echo-2.0.mar")
        self.port = int(self.torchserve.url.rsplit(":", 1)[1])
        self.management = int(self.torchserve.management_url.rsplit(":", 1)[1])
        java = [p for p in psutil.Process(self.torchserve.proc.pid).children(recursive=True) if p.name() == "java"]
        self.frontend_pid = java[0].pid if java else self.torchserve.proc.pid

    # -- plumbing ------------------------------------------------------------------------------

    def _wait_ready(self) -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.server.poll() is not None:
                raise SystemExit(f"the server exited; see {self.log_path}")
            try:
                if self.call("GET", "/v2/health/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"the server did not get ready; see {self.log_path}")

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
             port: int | None = None, connection: http.client.HTTPConnection | None = None,
             timeout: float = 60.0) -> tuple[int, bytes]:
        own = connection is None
        connection = connection or http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            if own:
                connection.close()

    def manage(self, method: str, path: str) -> tuple[int, object]:
        status, data = self.call(method, path, port=self.management)
        return status, json.loads(data) if data else None

    # -- the requests ----------------------------------------------------------------------------

    def request(self, kind: str, rid: int) -> tuple[str, str, bytes, dict[str, str], object]:
        """(method, path, body, headers, what a correct answer must contain)."""
        row = TINY_INPUTS[rid % len(TINY_INPUTS)]
        if kind == "tiny":
            return "POST", "/predictions/tiny", json.dumps({"data": row}).encode(), {
                "content-type": "application/json"}, ("tiny", rid % len(TINY_INPUTS))
        if kind == "tiny-v2":
            body = {"id": str(rid), "inputs": [{"name": "input0", "shape": [1, 64], "datatype": "FP32", "data": row}]}
            return "POST", "/v2/models/tiny/infer", json.dumps(body).encode(), {
                "content-type": "application/json"}, ("tiny-v2", rid % len(TINY_INPUTS))
        if kind == "tiny-v2-binary":
            raw = struct.pack("<64f", *row)
            header = json.dumps({"id": str(rid), "inputs": [{"name": "input0", "shape": [1, 64], "datatype": "FP32",
                                                             "parameters": {"binary_data_size": len(raw)}}]}).encode()
            return "POST", "/v2/models/tiny/infer", header + raw, {
                "content-type": "application/octet-stream",
                "inference-header-content-length": str(len(header))}, ("tiny-v2", rid % len(TINY_INPUTS))
        if kind == "echo":
            return "POST", "/predictions/echo", json.dumps({"id": rid}).encode(), {
                "content-type": "application/json"}, ("echo", rid)
        if kind == "echo-v1":
            return "POST", "/v1/models/echo:predict", json.dumps({"instances": [{"id": rid}]}).encode(), {
                "content-type": "application/json"}, ("echo-v1", rid)
        return "POST", "/predictions/resnet18", self.photo, {"content-type": "image/jpeg"}, ("resnet18", 0)

    def judge(self, status: int, data: bytes, expect: tuple[str, int], rid: int) -> tuple[str, str]:
        kind, key = expect
        if status != 200:
            try:
                message = json.loads(data)
                reason = str(message.get("message") or message.get("error") or "")
            except ValueError:
                reason = ""
            # the batch a killed worker held: launchkit says 500, TorchServe 507, both saying the worker died
            defined = (status in (500, 507) and "died" in reason.lower()) or status == 503 or status == 413
            return ("refused" if defined and reason else "wrong"), f"{status} {reason[:80]}"
        answer = json.loads(data)
        if kind == "echo":
            got = answer.get("echo", {}).get("id")
        elif kind == "echo-v1":
            got = answer["predictions"][0].get("echo", {}).get("id")
        elif kind == "tiny-v2":
            got = answer["outputs"][0]["data"]
            if answer.get("id") != str(rid):
                return "wrong", f"v2 id {answer.get('id')} for request {rid}"
        else:
            got = answer
        want = rid if kind.startswith("echo") else self.expected.get(f"{kind}:{key}")
        if want is None:  # warm-up: learn the answer
            self.expected[f"{kind}:{key}"] = got
            return "correct", ""
        return ("correct", "") if got == want else ("wrong", f"{kind} request {rid}: {str(got)[:80]}")

    def client(self, number: int, kinds: list[str]) -> None:
        keep = number % 2 == 0
        connection = None
        while not self.stop.is_set():
            kind = kinds[next(self.ids) % len(kinds)]
            rid = next(self.ids)
            method, path, body, headers, expect = self.request(kind, rid)
            if keep and connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            sent = time.perf_counter()
            try:
                status, data = self.call(method, path, body, headers, connection=connection if keep else None)
            except (OSError, http.client.HTTPException) as error:
                self.ledger.record("lost", f"{kind}: {type(error).__name__} {error}"[:120])
                if connection is not None:
                    connection.close()
                    connection = None
                continue
            outcome, reason = self.judge(status, data, expect, rid)
            self.ledger.record(outcome, reason, sent, time.perf_counter() - sent)

    # -- the faults ------------------------------------------------------------------------------

    def fault(self, number: int) -> str:
        which = number % len(FAULT_KINDS)
        if which == 0:
            workers = [w for name in ("tiny", "echo") for w in self.manage("GET", f"/models/{name}")[1][0]["workers"]
                       if w.get("pid")]
            victim = random.choice(workers)
            os.kill(victim["pid"], signal.SIGKILL)
            return f"SIGKILL worker {victim['id']}"
        if which == 1:
            target = 2 if (number // 6) % 2 == 0 else 1
            status, _ = self.manage("PUT", f"/models/tiny?min_worker={target}")
            return f"scale tiny to {target} ({status})"
        if which == 2:
            versions = [entry.get("modelVersion") for entry in self.manage("GET", "/models/echo/all")[1]]
            if "2.0" in versions:
                status, _ = self.manage("DELETE", "/models/echo/2.0")
                return f"unregister echo 2.0 ({status})"
            status, _ = self.manage("POST", "/models?url=echo-2.0.mar&initial_workers=1&synchronous=false")
            return f"register echo 2.0 ({status})"
        if which == 3:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw:
                raw.sendall(b"POST /predictions/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 1000\r\n\r\n{\"id\": ")
            return "client disconnected mid-body"
        if which == 4:
            rid = next(self.ids)
            body = json.dumps({"id": rid, "pad": "x" * 2000}).encode()
            sent = time.perf_counter()
            with socket.create_connection(("127.0.0.1", self.port), timeout=30) as raw:
                raw.sendall(b"POST /predictions/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
                for start in range(0, len(body), len(body) // 8):
                    raw.sendall(body[start:start + len(body) // 8])
                    time.sleep(0.25)
                reply = b""
                while b"\r\n\r\n" not in reply and (chunk := raw.recv(65536)):
                    reply += chunk
                head, _, data = reply.partition(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), None)
                while (length is None or len(data) < length) and (chunk := raw.recv(65536)):
                    data += chunk  # read to the end of the answer (a server may keep the connection open)
            status = int(head.split()[1]) if head else 0
            outcome, reason = self.judge(status, data, ("echo", rid), rid) if status else ("lost", "slow sender")
            self.ledger.record(outcome, reason or "slow sender", sent, time.perf_counter() - sent)
            return f"slow sender ({status})"
        status, data = self.call("POST", "/predictions/echo", b"x" * (MAX_REQUEST_SIZE + 1),
                                 {"content-type": "application/octet-stream"})
        self.ledger.record("refused" if status == 413 else "wrong", f"oversize body: {status}")
        return f"oversize body ({status})"

    # -- the run -----------------------------------------------------------------------------------

    def frontend(self) -> tuple[int, int]:
        process = psutil.Process(self.frontend_pid)
        return process.memory_info().rss, process.num_fds()

    def run(self) -> dict:
        args = self.args
        kinds = self.kinds
        for rid, kind in enumerate(kinds * len(TINY_INPUTS)):  # warm-up: learn each input's answer
            method, path, body, headers, expect = self.request(kind, rid)
            self.judge(*self.call(method, path, body, headers), expect, rid)
        clients = [threading.Thread(target=self.client, args=(n, kinds), daemon=True) for n in range(args.clients)]
        if not args.no_resnet:
            clients.append(threading.Thread(target=self.client, args=(1, ["resnet18"]), daemon=True))
        for thread in clients:
            thread.start()
        total = args.minutes * 60
        started = time.perf_counter()
        baseline_end = started + total / 4
        samples: list[tuple[float, int, int]] = []  # (s since start, frontend RSS, open files)

        def sample() -> None:
            while not self.stop.is_set():
                samples.append((round(time.perf_counter() - started, 1), *self.frontend()))
                self.stop.wait(10.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        while time.perf_counter() < baseline_end:
            time.sleep(0.2)
        warm = self.frontend()  # warmed up: every kind of request has been served for a quarter of the run
        number = 0
        while time.perf_counter() - started < total:
            at = time.perf_counter()
            try:
                what = self.fault(number)
            except (OSError, KeyError, IndexError, TypeError, http.client.HTTPException) as error:
                what = f"fault {number % len(FAULT_KINDS)} could not be made: {error}"
            self.ledger.faults.append((at, what))
            number += 1
            time.sleep(max(0.0, args.fault_every - (time.perf_counter() - at)))
        self.stop.set()
        for thread in clients:
            thread.join(90)
        end = self.frontend()
        return {"warm": warm, "end": end, "baseline_end": baseline_end, "started": started, "samples": samples}

    def close(self) -> int:
        if self.peer == "torchserve":
            self.torchserve.stop()
            return 0
        os.killpg(self.server.pid, signal.SIGTERM)
        try:
            return self.server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.server.pid, signal.SIGKILL)
            return self.server.wait()


def missing_faults(faults: list[tuple[float, str]]) -> list[str]:
    """The kinds of fault the run never made (each made fault's description names its kind)."""
    made = [what for _, what in faults if "could not be made" not in what]
    return [kind for kind in FAULT_KINDS if not any(kind in what for what in made)]


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 100 else max(values, default=0.0)


def summarize(soak: Soak, timeline: dict, code: int) -> dict:
    ledger = soak.ledger
    windows = [(at, at + FAULT_WINDOW_S) for at, _ in ledger.faults]
    baseline = [took for sent, took in ledger.latencies if sent < timeline["baseline_end"]]
    quiet = [took for sent, took in ledger.latencies if sent >= timeline["baseline_end"]
             and not any(start <= sent <= end for start, end in windows)]
    (rss0, fds0), (rss1, fds1) = timeline["warm"], timeline["end"]
    return {"outcomes": dict(ledger.outcomes), "reasons": dict(ledger.reasons), "faults": ledger.faults,
            "examples": ledger.examples, "baseline": len(baseline), "quiet": len(quiet),
            "p99_baseline_ms": 1000 * p99(baseline), "p99_quiet_ms": 1000 * p99(quiet),
            "p99_ratio": p99(quiet) / p99(baseline) if baseline and quiet else float("nan"),
            "memory_growth_pct": 100 * (rss1 - rss0) / rss0, "files_growth_pct": 100 * (fds1 - fds0) / fds0,
            "rss_mb": [round(rss / 2**20) for _, rss, _ in timeline["samples"]], "exit": code,
            "kinds": soak.kinds, "faults_missing": missing_faults(ledger.faults)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--fault-every", type=float, default=5.0, help="seconds between faults (default 5)")
    parser.add_argument("--no-resnet", action="store_true", help="tiny and echo only (the suite's short run)")
    parser.add_argument("--torchserve", action="store_true",
                        help="then the same soak against TorchServe 0.12 (/predictions only), side by side")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: the servers it started are stopped too
    runs = {}
    for peer in ("launchkit", "torchserve") if args.torchserve else ("launchkit",):
        print(f"soaking {peer} for {args.minutes:g} min ...", flush=True)
        soak = Soak(args, Path(tempfile.mkdtemp(prefix=f"launchkit-soak-{peer}-")), peer)
        try:
            timeline = soak.run()
        finally:
            code = soak.close()
        runs[peer] = summarize(soak, timeline, code)
    ours = runs["launchkit"]
    peer = runs.get("torchserve")
    checks = [
        absolute("every request", "lost", ours["outcomes"].get("lost", 0), 0, "", higher=False,
                 peer=peer["outcomes"].get("lost", 0) if peer else None),
        absolute("every request", "answered with another's result or an undefined error",
                 ours["outcomes"].get("wrong", 0), 0, "", higher=False,
                 peer=peer["outcomes"].get("wrong", 0) if peer else None),
        absolute("frontend", "% memory growth after warm-up", ours["memory_growth_pct"], 5, " %", higher=False,
                 peer=peer["memory_growth_pct"] if peer else None),
        absolute("frontend", "% open files growth after warm-up", ours["files_growth_pct"], 5, " %", higher=False,
                 peer=peer["files_growth_pct"] if peer else None),
        absolute("p99 outside fault windows", "× the fault-free baseline's p99", ours["p99_ratio"], 1.5, "×",
                 higher=False, peer=peer["p99_ratio"] if peer else None),
        absolute("server", "exit status after SIGTERM", ours["exit"], 0, "", higher=False),
        absolute("faults", "kinds never made", len(ours["faults_missing"]), 0, "", higher=False,
                 peer=len(peer["faults_missing"]) if peer else None),
    ]
    names = list(runs)
    outcomes = sorted({outcome for run in runs.values() for outcome in run["outcomes"]})
    rows = [[outcome, *(f"{runs[name]['outcomes'].get(outcome, 0):,}" for name in names)] for outcome in outcomes]
    rows += [["p99 ms, fault-free quarter", *(f"{runs[n]['p99_baseline_ms']:.1f}" for n in names)],
             ["p99 ms, chaos outside fault windows", *(f"{runs[n]['p99_quiet_ms']:.1f}" for n in names)],
             ["frontend RSS MB every 10 s", *(" ".join(map(str, runs[n]["rss_mb"])) for n in names)],
             ["request kinds", *(", ".join(runs[n]["kinds"]) for n in names)]]
    table = markdown_table(["", *names], rows)
    for name in names:
        table += f"\n\n{name}, reasons:\n\n" + markdown_table(
            ["reason", "requests"], [[reason, f"{count:,}"] for reason, count in
                                     Counter(runs[name]["reasons"]).most_common(12)])
    for name in names:
        faults = runs[name]["faults"]
        table += f"\n\n{name}, faults ({len(faults)}): " + "; ".join(
            f"{what} ×{count}" for what, count in Counter(w.split(" worker ")[0] for _, w in faults).items())
    write(results_dir("soak"), f"Soak with chaos: {args.minutes:g} min, {args.clients} clients, a fault every "
                               f"{args.fault_every:g} s", table, {"runs": runs, "args": vars(args)}, checks)
    failed = (ours["outcomes"].get("lost", 0) or ours["outcomes"].get("wrong", 0) or ours["exit"] != 0
              or ours["faults_missing"])
    if ours["faults_missing"]:
        print(f"never made: {', '.join(ours['faults_missing'])} (a longer run or a shorter --fault-every makes each)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
