"""`launchkit serve` against TorchServe 0.12, both measured live in one run (the serving issue's targets).

    python benchmarks/serve_anchors.py [--requests 20000] [--rounds 2] [--only NAME ...]

Scenarios (load from `ab -k`, body = a raw float32 sample; the same archive for both servers, one
worker each, interleaved: launchkit, then TorchServe, per round; medians over rounds):
  tiny-b1-c8     tiny, batch 1, c=8                  req/s ≥ 4× TorchServe, p99 ≤ 1/3 of TorchServe's
  tiny-b8-c32    tiny, batch 8 / delay 5 ms, c=32    req/s ≥ 4× TorchServe
  tiny-b8-c1     tiny, batch 8 / delay 5 ms, c=1     p50 ≤ 3 ms (TorchServe waits the whole delay)
  resnet-b1-c8   resnet18, batch 1, c=8: served req/s ÷ in-process img/s of the model as the server runs it,
                 same threads, windows interleaved                          ≥ 0.95
  cold-start     command → first *correct* prediction (the logits checked), tiny      ≤ 1.4 s
  memory         RSS of all server processes, idle, resnet18 loaded                    ≤ 300 MiB
Each verdict is computed from this run's numbers; a scenario whose load had errors fails.
TorchServe is set up by benchmarks/peers.py (Java 17 + its own venv); if it cannot run, the
reason is printed and the relative targets are left undecided. Writes results/<ts>-serve-anchors/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import Check, absolute, relative, results_dir, write  # noqa: E402
from peers import PeerUnavailable, TorchServe, ab, torchserve_command, tree_rss_mib  # noqa: E402

from launchkit.bench.server import ServerUnderTest  # noqa: E402

PY = sys.executable
COLD_START_DEADLINE_S = 120.0


def Served(archive: Path, *args: str) -> ServerUnderTest:  # noqa: N802 - reads like the class it returns
    return ServerUnderTest(archive, list(args), Path(tempfile.mkstemp(prefix="lk-serve-", suffix=".log")[1]))


def in_process_rate(threads: int, seconds: float, spec: str) -> float:
    """batch-1 img/s of the resnet18 example in-process, run as ``spec`` says (the server's path)."""
    code = (f"import sys, time, torch; sys.path.insert(0, {str(Path(__file__).parent.parent)!r})\n"
            f"torch.set_num_threads({threads})\n"
            "from launchkit.examples.resnet import resnet18\n"
            "from launchkit.model.spec import parse_spec\n"
            "from launchkit.model.transform import optimize_model\n"
            "x = torch.randn(1, 3, 224, 224)\n"
            f"m = optimize_model(resnet18(), parse_spec({spec!r}), lambda: (x,))\n"
            "[m(x) for _ in range(10)]\n"
            f"n, t = 0, time.perf_counter()\n"
            f"while time.perf_counter() - t < {seconds}: m(x); n += 1\n"
            "print(n / (time.perf_counter() - t))")
    return float(subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True).stdout)


def tiny_expected(body: bytes) -> list[float]:
    """tiny's logits for ``body``, computed here in-process from the same seeded model."""
    import torch

    from launchkit.examples.tiny import tiny_mlp

    with torch.no_grad():
        return tiny_mlp()(torch.frombuffer(bytearray(body), dtype=torch.float32).unsqueeze(0))[0].tolist()


def first_correct_prediction(url: str, body: bytes, expected: list[float], started: float, proc) -> float:
    """Seconds from ``started`` to the first 200 whose logits match ``expected``; raises past the deadline."""
    deadline = started + COLD_START_DEADLINE_S
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before answering")
        try:
            request = urllib.request.Request(url, data=body, headers={"content-type": "application/octet-stream"})
            with urllib.request.urlopen(request, timeout=5) as response:
                answer = json.loads(response.read())
            if len(answer) == len(expected) and all(abs(a - b) < 1e-4 for a, b in zip(answer, expected)):
                return time.perf_counter() - started
            raise RuntimeError(f"a 200 with wrong logits: {answer[:3]}... (expected {expected[:3]}...)")
        except OSError:
            time.sleep(0.005)
    raise RuntimeError(f"no correct prediction within {COLD_START_DEADLINE_S:g} s")


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000, help="per tiny measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the tiny scenarios")
    parser.add_argument("--window", type=float, default=5.0, help="seconds per resnet window")
    parser.add_argument("--windows", type=int, default=5, help="interleaved resnet window pairs")
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lk-serve-bench-"))
    subprocess.run([PY, "-m", "launchkit.examples.build", "--export-path", str(work)], check=True, capture_output=True)
    tiny, resnet = work / "tiny.mar", work / "resnet18.mar"
    tiny_body = work / "tiny.bin"
    tiny_body.write_bytes(struct.pack("64f", *[i / 64 for i in range(64)]))
    resnet_body = work / "resnet.bin"
    resnet_body.write_bytes(struct.pack(f"{3 * 224 * 224}f", *([0.5] * (3 * 224 * 224))))
    wanted = lambda name: not args.only or any(part in name for part in args.only)  # noqa: E731
    try:
        torchserve_command()
        peer_reason = None
    except PeerUnavailable as error:
        peer_reason = str(error)
        print(f"serve_anchors: TorchServe cannot run here: {peer_reason}", file=sys.stderr)
    checks: list[Check] = []
    data: dict = {"peer_unavailable": peer_reason}

    def both(scenario: str, archive: Path, measure, ours_args=(), ts_kwargs=None) -> tuple[list, list]:
        """Round by round: launchkit, then TorchServe, each measured by ``measure(url)``."""
        ours, theirs = [], []
        for _ in range(args.rounds):
            with Served(archive, *ours_args) as server:
                ours.append(measure(f"{server.url}/predictions/{archive.stem}"))
            if peer_reason is None:
                with TorchServe([archive], **(ts_kwargs or {})) as server:
                    theirs.append(measure(server.predictions(archive.stem)))
        data[scenario] = {"launchkit": ours, "torchserve": theirs}
        return ours, theirs

    if wanted("tiny-b1-c8"):
        def tiny_b1(url: str) -> dict:
            ab(url, tiny_body, 8, 2000)
            return ab(url, tiny_body, 8, args.requests)

        ours, theirs = both("tiny-b1-c8", tiny, tiny_b1)
        errors = sum(run["errors"] for run in ours + theirs)
        peer = (lambda key: median_of(theirs, key)) if theirs else (lambda key: None)
        checks.append(relative("tiny, batch 1, c=8", "req/s", median_of(ours, "req/s"), peer("req/s"), 4, higher=True,
                               errors=errors))
        checks.append(relative("tiny, batch 1, c=8", "p99 ms", median_of(ours, "p99 ms"), peer("p99 ms"), 1 / 3,
                               higher=False, errors=errors))
    if wanted("tiny-b8"):
        def tiny_b8(url: str) -> dict:
            ab(url, tiny_body, 32, 2000)
            return {"c32": ab(url, tiny_body, 32, args.requests), "c1": ab(url, tiny_body, 1, 2000)}

        ours, theirs = both("tiny-b8", tiny, tiny_b8, ("--batch-size", "8", "--max-batch-delay", "5"),
                            {"batch_size": 8, "max_batch_delay_ms": 5})
        errors = sum(run[key]["errors"] for run in ours + theirs for key in ("c32", "c1"))
        c32 = [run["c32"] for run in ours]
        checks.append(relative("tiny, batch 8 / 5 ms, c=32", "req/s", median_of(c32, "req/s"),
                               median_of([run["c32"] for run in theirs], "req/s") if theirs else None, 4, higher=True,
                               errors=errors))
        checks.append(absolute("tiny, batch 8 / 5 ms, c=1", "p50 ms", median_of([run["c1"] for run in ours], "p50 ms"),
                               3, " ms", higher=False, errors=errors,
                               peer=median_of([run["c1"] for run in theirs], "p50 ms") if theirs else None))
    if wanted("resnet"):
        threads = len(os.sched_getaffinity(0))

        def ratio_windows(url: str, spec: str) -> dict:
            ab(url, resnet_body, 8, 50)
            served, local, errors = [], [], 0
            for _ in range(args.windows):
                local.append(in_process_rate(threads, args.window, spec))
                run = ab(url, resnet_body, 8, seconds=args.window)
                served.append(run["req/s"])
                errors += run["errors"]
            # This machine drifts by ±15% within a minute: each served window against the in-process
            # window just before it, median of those ratios.
            ratios = sorted(s / loc for s, loc in zip(served, local))
            return {"req/s": statistics.mean(served), "in-process img/s": statistics.mean(local),
                    "ratio": statistics.median(ratios), "ratios": ratios, "errors": errors}

        # launchkit runs the example as its model-config.yaml asks (fp32, channels-last, TorchScript);
        # TorchServe runs it as written (eager fp32): each is compared with its own path in-process.
        with Served(resnet) as server:
            ours = ratio_windows(f"{server.url}/predictions/resnet18", "fp32,channels_last,torchscript")
        theirs = None
        if peer_reason is None:
            with TorchServe([resnet]) as server:
                theirs = ratio_windows(server.predictions("resnet18"), "fp32")
        data["resnet-b1-c8"] = {"launchkit": ours, "torchserve": theirs}
        checks.append(absolute("resnet18, batch 1, c=8", "served ÷ in-process", ours["ratio"], 0.95, "",
                               higher=True, peer=theirs["ratio"] if theirs else None,
                               errors=ours["errors"] + (theirs["errors"] if theirs else 0)))
    if wanted("cold-start"):
        body = tiny_body.read_bytes()
        expected = tiny_expected(body)
        ours, theirs, failures = [], [], []
        for _ in range(3):
            for name, start in (("launchkit", lambda: Served(tiny)), ("torchserve", lambda: TorchServe([tiny]))):
                if name == "torchserve" and peer_reason is not None:
                    continue
                server = start()
                url = f"{server.url}/predictions/tiny"
                try:
                    seconds = first_correct_prediction(url, body, expected, server.started, server.proc)
                    (ours if name == "launchkit" else theirs).append(seconds)
                except RuntimeError as error:
                    failures.append(f"{name}: {error}")
                finally:
                    server.stop()
        data["cold-start"] = {"launchkit": ours, "torchserve": theirs, "failures": failures}
        checks.append(absolute("cold start, tiny", "s to a correct answer", statistics.median(ours) if ours else
                               float("nan"), 1.4, " s", higher=False, errors=len(failures),
                               peer=statistics.median(theirs) if theirs else None))
    if wanted("memory"):
        with Served(resnet) as server:
            time.sleep(2)
            ours = tree_rss_mib(server.proc.pid)
        theirs = None
        if peer_reason is None:
            with TorchServe([resnet]) as server:
                time.sleep(2)
                theirs = server.rss_mib()
        data["memory"] = {"launchkit": ours, "torchserve": theirs}
        checks.append(absolute("memory, idle, resnet18 loaded", "RSS MiB", ours, 300, " MiB", higher=False,
                               peer=theirs))
    note = "" if peer_reason is None else f"TorchServe could not run: {peer_reason}"
    return write(results_dir("serve-anchors"), "launchkit serve vs TorchServe 0.12 (both live, interleaved)", note,
                 data, checks)


if __name__ == "__main__":
    sys.exit(main())
