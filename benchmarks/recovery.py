"""Worker recovery and scale-up, with the fork server and without it (fork_workers=false), same run.

    python benchmarks/recovery.py [--model tiny|resnet18] [--kills 5] [--scale N] [--torchserve]

For each mode: a server with one worker, a client sending the model's sample request in a loop;
the worker is SIGKILLed --kills times (2 s apart, so each death counts as one after serving) and the
figure is the gap from the kill to the client's next 200 (every 200 after the kill comes from the
new worker: there is only one). Then ``PUT /models/M?min_worker=N&synchronous=true`` from 1 to N
workers (default: one per core) and its wall time. ``--torchserve``: the same kills and scale-up
against TorchServe 0.12 live (its worker's Python process killed; ``min_worker`` and ``max_worker``
to N), in the same run. Targets (issue 27): a killed worker answers again in <= 0.5 s; 1 -> 16
workers on the 16-core machine in <= 1.5 s. Writes results/<ts>-recovery/.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _report import absolute, markdown_table, results_dir, write  # noqa: E402
from launchkit.core.ports import free_port  # noqa: E402


def _call(url: str, method: str = "GET", body: bytes | None = None, timeout: float = 120,
          content_type: str = "application/json") -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers={"content-type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


class Serving:
    def __init__(self, archive: Path, fork: bool, workdir: Path) -> None:
        self.inference, self.management, metrics = free_port(), free_port(), free_port()
        self.inference_url = f"http://127.0.0.1:{self.inference}"
        self.management_url = f"http://127.0.0.1:{self.management}"
        config = workdir / f"config-{fork}.properties"
        config.write_text(f"fork_workers={'true' if fork else 'false'}\n")
        self.log = open(workdir / f"serve-{fork}.log", "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "launchkit", "serve", str(archive), "--ts-config", str(config),
             "--inference-address", f"http://127.0.0.1:{self.inference}",
             "--management-address", f"http://127.0.0.1:{self.management}",
             "--metrics-address", f"http://127.0.0.1:{metrics}"], stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.time() + 180
        while _call(f"http://127.0.0.1:{self.inference}/v2/health/ready")[0] != 200:
            if time.time() > deadline or self.process.poll() is not None:
                raise SystemExit(f"the server did not start; see {self.log.name}")
            time.sleep(0.1)
        if fork:  # the fork server starts beside the first worker
            while "fork server" not in Path(self.log.name).read_text():
                time.sleep(0.1)

    def workers(self, model: str) -> list[dict]:
        return json.loads(_call(f"{self.management_url}/models/{model}")[1])[0]["workers"]

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(60)


class TorchServeServing:
    """TorchServe 0.12 live (benchmarks/peers.py), shaped like :class:`Serving`."""

    def __init__(self, archive: Path) -> None:
        from peers import TorchServe

        self.server = TorchServe([archive]).__enter__()
        self.inference_url, self.management_url = self.server.url, self.server.management_url
        self.log = self.server.handle

    def workers(self, model: str) -> list[dict]:
        return json.loads(_call(f"{self.management_url}/models/{model}")[1])[0]["workers"]

    def stop(self) -> None:
        self.server.stop()


def measure(serving: Serving | TorchServeServing, model: str, body: bytes, kills: int, scale: int) -> dict:
    url = f"{serving.inference_url}/predictions/{model}"
    content_type = "image/jpeg" if body.startswith(b"\xff\xd8") else "application/json"
    answered: list[tuple[float, float]] = []  # (sent, answered) of each 200
    statuses: dict[int, int] = {}
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            sent = time.perf_counter()
            status = _call(url, "POST", body, timeout=30, content_type=content_type)[0]
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                answered.append((sent, time.perf_counter()))

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    gaps = []
    try:
        for _ in range(kills):
            time.sleep(2.0)
            pid = int(serving.workers(model)[0]["pid"])
            killed = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            # the first request sent after the kill (one answered just before it died does not count)
            while not any(sent > killed for sent, _ in answered[-50:]):
                time.sleep(0.002)
                if time.perf_counter() - killed > 60:
                    raise SystemExit(f"no 200 in 60 s after a kill; answers so far: {statuses}; see {serving.log.name}")
            gaps.append(next(at for sent, at in answered if sent > killed) - killed)
        stop.set()
        thread.join(30)
        started = time.perf_counter()
        status, text = _call(f"{serving.management_url}/models/{model}?min_worker={scale}&max_worker={scale}"
                             "&synchronous=true", "PUT")
        scaled = time.perf_counter() - started
        if status != 200:
            raise SystemExit(f"scaling to {scale} workers failed: {status} {text[:300]!r}")
    finally:
        stop.set()
        serving.stop()
    return {"gaps_s": gaps, "scale_s": scaled}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", choices=("tiny", "resnet18"))
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--scale", type=int, default=len(os.sched_getaffinity(0)), help="workers (default: CPUs)")
    parser.add_argument("--torchserve", action="store_true", help="also TorchServe 0.12, live, in the same run")
    args = parser.parse_args()
    from launchkit.examples.build import build_example

    workdir = Path(tempfile.mkdtemp(prefix="launchkit-recovery-"))
    archive = Path(build_example(args.model, str(workdir)))
    body = json.dumps({"data": [0.5] * 64}).encode()
    if args.model == "resnet18":  # the archive's own sample photo
        import zipfile

        with zipfile.ZipFile(archive) as bundle:
            body = next(bundle.read(name) for name in bundle.namelist() if name.endswith((".jpg", ".jpeg")))
    results = {}
    for fork in (True, False):
        label = "fork server" if fork else "exec (fork_workers=false)"
        print(f"measuring {label} ...", flush=True)
        results[label] = measure(Serving(archive, fork, workdir), args.model, body, args.kills, args.scale)
    if args.torchserve:
        print("measuring TorchServe 0.12 ...", flush=True)
        results["TorchServe 0.12"] = measure(TorchServeServing(archive), args.model, body, args.kills, args.scale)
    rows = [[label, f"{statistics.median(r['gaps_s']):.3f}", f"{max(r['gaps_s']):.3f}",
             ", ".join(f"{gap:.2f}" for gap in r["gaps_s"]), f"{r['scale_s']:.2f}"] for label, r in results.items()]
    table = markdown_table(["workers made by", "kill → next 200, median s", "max s", "each kill s",
                            f"1 → {args.scale} workers s"], rows)
    fork, execd = results["fork server"], results["exec (fork_workers=false)"]
    checks = [
        absolute(f"{args.model}: SIGKILLed worker", "s from kill to next 200 (max)", max(fork["gaps_s"]), 0.5, " s",
                 higher=False, peer=max(execd["gaps_s"]), peer_name="exec"),
        *([absolute(f"{args.model}: SIGKILLed worker", "s from kill to next 200 (max), against TorchServe",
                    max(fork["gaps_s"]), 0.5, " s", higher=False, peer=max(results["TorchServe 0.12"]["gaps_s"]),
                    peer_name="TorchServe 0.12 (live)")] if "TorchServe 0.12" in results else []),
        absolute(f"{args.model}: 1 → {args.scale} workers", "s (synchronous scale)", fork["scale_s"],
                 1.5, " s", higher=False, peer=execd["scale_s"], peer_name="exec",
                 note="" if args.scale >= 16 else "target is for 16 workers on the 16-core machine"),
    ]
    return write(results_dir("recovery"), f"Worker recovery and scale-up ({args.model}, {args.kills} kills)", table,
                 {"model": args.model, "scale": args.scale, "results": results}, checks)


if __name__ == "__main__":
    sys.exit(main())
