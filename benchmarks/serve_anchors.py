"""`launchkit serve` against TorchServe's recorded figures (the anchors of the serving issue).

    python benchmarks/serve_anchors.py [--requests 20000] [--window 15] [--only NAME ...]

Scenarios (load from `ab -k`, body = a raw float32 sample, as the anchors were measured):
  tiny-b1-c8        tiny, batch 1, c=8                      req/s and p99
  tiny-b8-c32       tiny, batch 8 / delay 5 ms, c=32        req/s
  tiny-b8-c1        tiny, batch 8 / delay 5 ms, c=1         p50
  resnet-b1-c8      resnet18, batch 1, c=8, default settings: served req/s ÷ in-process img/s of the
                    same TorchScript file with as many threads, windows interleaved
  cold-start        command → first correct prediction, tiny
  memory            RSS of all server processes, idle, resnet18 loaded
TorchServe is not installable here (it needs Java and its frontend); its figures, measured on
the same 2-core machine, are recorded below and printed beside ours with the target ratio.
Writes results/<ts>-serve-anchors/.
"""

from __future__ import annotations

import argparse
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import markdown_table, results_dir, write  # noqa: E402

from launchkit.bench.server import ServerUnderTest  # noqa: E402

PY = sys.executable
TORCHSERVE = {  # recorded on the 2-core development machine, TorchServe 0.12.0, 1 worker, ab -k
    "tiny-b1-c8": {"req/s": 1537.0, "p99 ms": 12.3},
    "tiny-b8-c32": {"req/s": 3075.0},
    "tiny-b8-c1": {"p50 ms": 6.3},
    "resnet-b1-c8": {"÷ in-process": 0.75},
    "cold-start": {"s": 2.8},
    "memory": {"MiB": 500.0},
}
TARGETS = {
    "tiny-b1-c8": "≥ 4× req/s, ≤ 1/3 p99",
    "tiny-b8-c32": "≥ 4× req/s",
    "tiny-b8-c1": "p50 ≤ 3 ms",
    "resnet-b1-c8": "≥ 0.95",
    "cold-start": "≤ 1.4 s",
    "memory": "≤ 300 MiB",
}


def Served(archive: Path, *args: str) -> ServerUnderTest:  # noqa: N802 - reads like the class it returns
    return ServerUnderTest(archive, list(args), Path(tempfile.mkstemp(prefix="lk-serve-", suffix=".log")[1]))


def ab(url: str, body: Path, concurrency: int, requests: int = 0, seconds: float = 0) -> dict[str, float]:
    with tempfile.NamedTemporaryFile(suffix=".csv") as percentiles:
        # ab allocates its statistics for -n requests up front: keep -n near what the window can reach
        limit = ["-t", str(seconds), "-n", str(requests or 100000)] if seconds else ["-n", str(requests)]
        output = subprocess.run(["ab", "-q", "-k", "-c", str(concurrency), *limit, "-p", str(body), "-T",
                                 "application/octet-stream", "-e", percentiles.name, url],
                                capture_output=True, text=True).stdout
        table = {}
        for line in Path(percentiles.name).read_text().splitlines()[1:]:
            percent, value = line.split(",")
            table[int(float(percent))] = float(value)
    done = int(re.search(r"Complete requests:\s+(\d+)", output).group(1))
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", output)
    return {"req/s": float(re.search(r"Requests per second:\s+([\d.]+)", output).group(1)),
            "p50 ms": table.get(50, float("nan")), "p99 ms": table.get(99, float("nan")),
            "requests": done, "non2xx": int(non2xx.group(1)) if non2xx else 0}


def in_process_rate(threads: int, seconds: float) -> float:
    """batch-1 img/s of the resnet18 example run in-process the way its archive is served by
    default (fp32, channels-last, traced and frozen at load)."""
    code = (f"import sys, time, torch; sys.path.insert(0, {str(Path(__file__).parent.parent)!r})\n"
            f"torch.set_num_threads({threads})\n"
            "from launchkit.examples.resnet import resnet18\n"
            "from launchkit.model.spec import parse_spec\n"
            "from launchkit.model.transform import optimize_model\n"
            "x = torch.randn(1, 3, 224, 224)\n"
            "m = optimize_model(resnet18(), parse_spec('fp32,channels_last,torchscript'), lambda: (x,))\n"
            "[m(x) for _ in range(10)]\n"
            f"n, t = 0, time.perf_counter()\n"
            f"while time.perf_counter() - t < {seconds}: m(x); n += 1\n"
            "print(n / (time.perf_counter() - t))")
    return float(subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True).stdout)


def rss_mib(pid: int) -> float:
    import psutil

    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--window", type=float, default=5.0, help="seconds per resnet window")
    parser.add_argument("--windows", type=int, default=7, help="interleaved resnet window pairs")
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lk-serve-bench-"))
    subprocess.run([PY, "-m", "launchkit.examples.build", "--export-path", str(work)], check=True,
                   capture_output=True)
    tiny, resnet = work / "tiny.mar", work / "resnet18.mar"
    tiny_body = work / "tiny.bin"
    tiny_body.write_bytes(struct.pack("64f", *[i / 64 for i in range(64)]))
    resnet_body = work / "resnet.bin"
    resnet_body.write_bytes(struct.pack(f"{3 * 224 * 224}f", *([0.5] * (3 * 224 * 224))))
    wanted = lambda name: not args.only or any(part in name for part in args.only)  # noqa: E731
    ours: dict[str, dict[str, float]] = {}

    if wanted("tiny-b1-c8"):
        with Served(tiny) as server:
            ab(f"{server.url}/predictions/tiny", tiny_body, 8, 2000)
            ours["tiny-b1-c8"] = ab(f"{server.url}/predictions/tiny", tiny_body, 8, args.requests)
    if wanted("tiny-b8"):
        with Served(tiny, "--batch-size", "8", "--max-batch-delay", "5") as server:
            ab(f"{server.url}/predictions/tiny", tiny_body, 32, 2000)
            ours["tiny-b8-c32"] = ab(f"{server.url}/predictions/tiny", tiny_body, 32, args.requests)
            ours["tiny-b8-c1"] = ab(f"{server.url}/predictions/tiny", tiny_body, 1, 2000)
    if wanted("resnet"):
        threads = len(os.sched_getaffinity(0))
        with Served(resnet) as server:
            ab(f"{server.url}/predictions/resnet18", resnet_body, 8, 50)
            served, local = [], []
            for _ in range(args.windows):
                local.append(in_process_rate(threads, args.window))
                served.append(ab(f"{server.url}/predictions/resnet18", resnet_body, 8, seconds=args.window)["req/s"])
        # This machine drifts by ±15% within a minute: compare each served window with the
        # in-process window just before it, and report the median of those ratios.
        ratios = sorted(s / l for s, l in zip(served, local))
        ours["resnet-b1-c8"] = {"req/s": sum(served) / len(served), "in-process img/s": sum(local) / len(local),
                                "÷ in-process": ratios[len(ratios) // 2], "ratios": ratios}
    if wanted("cold-start"):
        times = []
        for _ in range(3):
            server = Served(tiny)
            body = tiny_body.read_bytes()
            while True:
                try:
                    request = urllib.request.Request(f"{server.url}/predictions/tiny", data=body,
                                                     headers={"content-type": "application/octet-stream"})
                    if urllib.request.urlopen(request, timeout=5).status == 200:
                        break
                except OSError:
                    time.sleep(0.005)
            times.append(time.perf_counter() - server.started)
            server.stop()
        ours["cold-start"] = {"s": sorted(times)[1]}
    if wanted("memory"):
        with Served(resnet) as server:
            time.sleep(2)
            ours["memory"] = {"MiB": rss_mib(server.proc.pid)}

    rows = []
    for name, figures in ours.items():
        for metric, anchor in TORCHSERVE[name].items():
            value = figures[metric]
            ratio = value / anchor
            rows.append([name, metric, f"{value:.2f}", f"{anchor:g}", f"{ratio:.2f}", TARGETS[name]])
    table = markdown_table(["scenario", "metric", "launchkit", "TorchServe (recorded)", "ratio", "target"], rows)
    write(results_dir("serve-anchors"), "launchkit serve vs TorchServe 0.12 (recorded anchors)", table,
          {"ours": ours, "torchserve": TORCHSERVE})


if __name__ == "__main__":
    main()
