"""What the commands cost to start: `launchkit info`, and bench's own CPU beside ab's for the same requests.

    python benchmarks/cli_cost.py [--runs 7] [--requests 6000]

1. `launchkit info --json`: wall time, median of --runs (target ≤ 0.3 s).
2. bench's fixed CPU (interpreter, imports, set-up before the first request; target ≤ 0.5 s) and
   its CPU during the load, from its summary.json, against `ab -k`'s CPU for the same requests
   to the same server (tiny, batch 1, c=8), interleaved. bench writes its report after the load,
   once the server it measures no longer needs the CPU.
Writes results/<ts>-cli-cost/.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import absolute, markdown_table, relative, results_dir, write  # noqa: E402
from peers import ab  # noqa: E402
from serve_anchors import PY, Served  # noqa: E402


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--requests", type=int, default=6000)
    args = parser.parse_args()
    info = []
    for _ in range(args.runs):
        started = time.perf_counter()
        subprocess.run([PY, "-m", "launchkit", "info", "--json"], check=True, capture_output=True)
        info.append(time.perf_counter() - started)
    work = Path(tempfile.mkdtemp(prefix="lk-cli-cost-"))
    subprocess.run([PY, "-m", "launchkit.examples.build", "--export-path", str(work), "tiny"], check=True,
                   capture_output=True)
    body = work / "tiny.bin"
    body.write_bytes(bytes(256))
    bench_runs, ab_runs, errors = [], [], 0
    with Served(work / "tiny.mar") as server:
        url = f"{server.url}/predictions/tiny"
        ab(url, body, 8, 2000)
        for round_index in range(3):
            report = work / f"bench-{round_index}"
            before = children_cpu()
            result = subprocess.run([PY, "-m", "launchkit", "bench", url, "-i", str(body), "-c", "8", "-r",
                                     str(args.requests), "--warmup", "0", "--quiet", "-rl", str(report)],
                                    capture_output=True, text=True)
            total = children_cpu() - before
            errors += result.returncode != 0
            cpu = json.loads((report / "summary.json").read_text())["client_cpu_s"]
            bench_runs.append({"fixed": cpu["before_load"], "load": cpu["load"], "total": total})
            before = children_cpu()
            run = ab(url, body, 8, args.requests)
            errors += run["errors"]
            ab_runs.append({"total": children_cpu() - before})
    fixed = statistics.median(run["fixed"] for run in bench_runs)
    load = statistics.median(run["load"] for run in bench_runs)
    ab_total = statistics.median(run["total"] for run in ab_runs)
    rows = [["launchkit info --json, wall s", f"{statistics.median(info):.3f}", ", ".join(f"{t:.3f}" for t in info)],
            ["bench: CPU before the first request, s", f"{fixed:.3f}", ", ".join(f"{r['fixed']:.3f}" for r in bench_runs)],
            [f"bench: CPU during {args.requests} requests, s", f"{load:.3f}",
             ", ".join(f"{r['load']:.3f}" for r in bench_runs)],
            ["bench: whole process incl. report, s", f"{statistics.median(r['total'] for r in bench_runs):.3f}",
             ", ".join(f"{r['total']:.3f}" for r in bench_runs)],
            [f"ab -k: whole process, {args.requests} requests, s", f"{ab_total:.3f}",
             ", ".join(f"{r['total']:.3f}" for r in ab_runs)]]
    checks = [absolute("launchkit info", "wall s", statistics.median(info), 0.3, " s", higher=False),
              absolute("launchkit bench", "fixed CPU s", fixed, 0.5, " s", higher=False, errors=errors,
                       peer=ab_total, peer_name="ab's whole run (CPU s)"),
              # restored (commit 86af29c had dropped it minutes before the README published "all met")
              relative("launchkit bench", "CPU during the load vs ab's whole run", load, ab_total, 2, higher=False,
                       errors=errors, peer_name="ab (CPU s)")]
    return write(results_dir("cli-cost"), "Start-up and fixed costs of the commands", markdown_table(
        ["measurement", "median", "runs"], rows), {"info_s": info, "bench": bench_runs, "ab": ab_runs}, checks)


if __name__ == "__main__":
    sys.exit(main())
