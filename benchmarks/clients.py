"""`launchkit bench --clients P` against one server: does the load generator stop being the limit?

    python benchmarks/clients.py [--clients 1,2,4] [--concurrency 64] [--seconds 8] [--workers 8]

The bundled tiny example, served by one `launchkit serve` (--workers, batch 8 / 1 ms), driven at
--concurrency by `launchkit bench --clients P` for each P, interleaved over --rounds; req/s and
p99 (merged exactly over the P processes). Target: P=4 ≥ 1.3× P=1 where one client process is the
bottleneck (a many-core machine), and never below it.

Writes results/<ts>-clients/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from _report import markdown_table, relative, results_dir, write  # noqa: E402


def main() -> int:
    from launchkit.bench.inputs import declared_input
    from launchkit.bench.server import ServerUnderTest
    from launchkit.examples.cache import ensure_examples

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,2,4")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    counts = [int(value) for value in args.clients.split(",")]
    archive = ensure_examples(("tiny",))[0]
    work = Path(tempfile.mkdtemp(prefix="lk-clients-"))
    body = work / "body"
    sample = declared_input(archive)
    assert sample is not None
    body.write_bytes(sample.body)
    runs: dict[int, list[dict]] = {count: [] for count in counts}
    with ServerUnderTest(archive, ["--workers", str(args.workers), "--batch-size", "8", "--max-batch-delay", "1"],
                         work / "server.log") as server:
        url = f"{server.url}/predictions/{server.model}"
        for round_ in range(args.rounds):
            for count in counts:
                folder = work / f"r{round_}-p{count}"
                result = subprocess.run([sys.executable, "-m", "launchkit", "bench", url, "-i", str(body),
                                         "--content-type", sample.content_type, "-c", str(args.concurrency),
                                         "--duration", f"{args.seconds:g}", "--warmup", "1s", "--clients", str(count),
                                         "-q", "-rl", str(folder)], capture_output=True, text=True)
                if result.returncode != 0:
                    raise SystemExit(f"bench --clients {count} failed:\n{result.stderr[-2000:]}")
                level = json.loads((folder / "summary.json").read_text())["levels"][0]
                runs[count].append({"req/s": level["throughput"], "p99": level["latency_ms"]["p99"],
                                    "failed": level["requests_failed"]})
    median = {count: statistics.median(run["req/s"] for run in values) for count, values in runs.items()}
    rows = [[f"--clients {count}", f"{median[count]:,.0f}",
             f"{statistics.median(run['p99'] for run in runs[count]):.2f}", f"{median[count] / median[counts[0]]:.2f}×",
             sum(run["failed"] for run in runs[count])] for count in counts]
    table = markdown_table([f"tiny, {args.workers} workers, c={args.concurrency}", "req/s (median)", "p99 ms",
                            f"÷ --clients {counts[0]}", "failed"], rows)
    errors = sum(run["failed"] for values in runs.values() for run in values)
    checks = [relative(f"bench --clients {counts[-1]} vs {counts[0]}", "req/s", median[counts[-1]], median[counts[0]],
                       1.3, higher=True, errors=errors, peer_name=f"--clients {counts[0]}",
                       note="only where one client process is the bottleneck")]
    return write(results_dir("clients"), "bench --clients: load from several processes", table,
                 {"runs": runs, "median": median}, checks)


if __name__ == "__main__":
    sys.exit(main())
