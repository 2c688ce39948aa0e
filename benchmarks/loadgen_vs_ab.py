"""Load-generator efficiency: launchkit bench's client against `ab -k`, same server, interleaved.

    python benchmarks/loadgen_vs_ab.py [--rounds 5] [--requests 20000] [--concurrency 8]

Serves the bundled tiny example (batch 1), then alternates ab and launchkit's load generator
at the same concurrency. Compares throughput, p50 (ab's own percentile table, from `-e`), and
client CPU per request (user+sys of the client process). Targets: throughput ≥ 0.95 × ab's,
p50 within 10%, CPU per request ≤ 2 × ab's. Writes results/<ts>-loadgen-vs-ab/.
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import markdown_table, relative, results_dir, write  # noqa: E402
from serve_anchors import Served  # noqa: E402

from launchkit.bench.loadgen import LoadSpec, run_level  # noqa: E402
from launchkit.bench.requests import Payload, Target, encode_requests
from launchkit.bench.stats import summarize  # noqa: E402


def run_ab(url: str, body: Path, concurrency: int, requests: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile(suffix=".csv") as table:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        output = subprocess.run(["ab", "-q", "-k", "-c", str(concurrency), "-n", str(requests), "-p", str(body),
                                 "-T", "application/octet-stream", "-e", table.name, url],
                                capture_output=True, text=True, check=True).stdout
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        p50 = next(float(line.split(",")[1]) for line in Path(table.name).read_text().splitlines()[1:]
                   if line.startswith("50,"))
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", output)
    failed = re.search(r"\(Connect: (\d+), Receive: (\d+), Length: \d+, Exceptions: (\d+)\)", output)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, failed.groups())) if failed else 0)
    return {"req/s": float(re.search(r"Requests per second:\s+([\d.]+)", output).group(1)), "p50 ms": p50,
            "cpu us/req": cpu / requests * 1e6, "errors": errors}


def run_ours(url: str, body: bytes, concurrency: int, requests: int) -> dict[str, float]:
    import uvloop

    target = Target.from_url(url)
    encoded = encode_requests(target, [Payload(body, "application/octet-stream")])
    before = resource.getrusage(resource.RUSAGE_SELF)
    samples = uvloop.run(run_level(target, encoded, LoadSpec(concurrency=concurrency, requests=requests)))
    after = resource.getrusage(resource.RUSAGE_SELF)
    result = summarize(samples, concurrency, None)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"req/s": result.throughput, "p50 ms": result.latency_ms["p50"], "cpu us/req": cpu / requests * 1e6,
            "errors": result.requests_failed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lk-loadgen-"))
    subprocess.run([sys.executable, "-m", "launchkit.examples.build", "--export-path", str(work), "tiny"],
                   check=True, capture_output=True)
    body = work / "tiny.bin"
    body.write_bytes(bytes(256))  # 64 float32 zeros: the tiny model's input
    runs: dict[str, list[dict[str, float]]] = {"ab -k": [], "launchkit": []}
    with Served(work / "tiny.mar") as server:
        url = f"{server.url}/predictions/tiny"
        run_ab(url, body, args.concurrency, 2000)
        for round_index in range(args.rounds):
            order = ["ab -k", "launchkit"] if round_index % 2 == 0 else ["launchkit", "ab -k"]
            for name in order:
                if name == "ab -k":
                    runs[name].append(run_ab(url, body, args.concurrency, args.requests))
                else:
                    runs[name].append(run_ours(url, body.read_bytes(), args.concurrency, args.requests))
            print(f"round {round_index + 1}/{args.rounds}", file=sys.stderr)
    medians = {name: {key: statistics.median(run[key] for run in values) for key in ("req/s", "p50 ms", "cpu us/req")}
               for name, values in runs.items()}
    ours, ab = medians["launchkit"], medians["ab -k"]
    rows = [[name, f"{m['req/s']:.0f}", f"{m['p50 ms']:.3f}", f"{m['cpu us/req']:.1f}"] for name, m in medians.items()]
    rows.append(["launchkit ÷ ab", f"{ours['req/s'] / ab['req/s']:.3f}", f"{ours['p50 ms'] / ab['p50 ms']:.3f}",
                 f"{ours['cpu us/req'] / ab['cpu us/req']:.2f}"])
    table = markdown_table(["client", "req/s", "p50 ms", "client CPU µs/request"], rows)
    errors = sum(run["errors"] for values in runs.values() for run in values)
    scenario = f"tiny b1 c={args.concurrency}"
    checks = [relative(scenario, "req/s", ours["req/s"], ab["req/s"], 0.95, higher=True, errors=errors, peer_name="ab"),
              relative(scenario, "p50 ms", ours["p50 ms"], ab["p50 ms"], 1.10, higher=False, errors=errors,
                       peer_name="ab"),
              relative(scenario, "client CPU µs/request", ours["cpu us/req"], ab["cpu us/req"], 2, higher=False,
                       errors=errors, peer_name="ab")]
    return write(results_dir("loadgen-vs-ab"), f"Load generator vs ab -k (tiny, batch 1, c={args.concurrency}, "
                 f"median of {args.rounds} interleaved rounds)", table, {"runs": runs, "medians": medians}, checks)


if __name__ == "__main__":
    sys.exit(main())
