"""A batch ahead (a busy worker holds the next full batch in its socket) against none, in one run.

    python benchmarks/batch_ahead.py [--levels 1,4,16] [--seconds 6] [--rounds 3] [--no-resnet]

Each round starts `launchkit serve` twice on the same archive, with ``batch_ahead`` on (the default)
and off (``LAUNCHKIT_BATCH_AHEAD=false``, as before), in alternating order, and drives each with
launchkit's closed-loop load generator (POST /predictions, keep-alive) at each concurrency:
  tiny       the bundled tiny example, one worker, batch 1 (a model much shorter than the round trip
             through the frontend: where a worker idles between batches)
  resnet18   the bundled resnet18, two workers, batch 1 (a model longer than the round trip: a
             request ahead may wait behind a batch while the other worker frees; its p99 is the
             figure to watch)
Medians over rounds. Verdicts: tiny throughput with a batch ahead ≥ 1.2× without at c ≥ 4; resnet18
throughput ≥ 0.95× and p99 ≤ 1.10× without. A level with errors fails. Writes
results/<ts>-batch-ahead/.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from _report import Check, markdown_table, relative, results_dir, write  # noqa: E402
from serve_anchors import Served  # noqa: E402

WAYS = {"ahead": "true", "none": "false"}


def drive(url: str, body: bytes, content_type: str, concurrency: int, seconds: float) -> dict:
    import uvloop

    from launchkit.bench.loadgen import LoadSpec, run_level
    from launchkit.bench.requests import Payload, Target, encode_requests
    from launchkit.bench.stats import summarize

    target = Target.from_url(url)
    encoded = encode_requests(target, [Payload(body, content_type)])
    uvloop.run(run_level(target, encoded, LoadSpec(concurrency=concurrency, duration_s=1.0), record=False))  # warm
    samples = uvloop.run(run_level(target, encoded, LoadSpec(concurrency=concurrency, duration_s=seconds)))
    result = summarize(samples, concurrency, None)
    return {"req/s": result.throughput, "p50 ms": result.latency_ms["p50"], "p99 ms": result.latency_ms["p99"],
            "errors": result.requests_failed}


def scenario(archive: Path, name: str, args: list[str], body: bytes, content_type: str, levels: list[int],
             seconds: float, rounds: int) -> dict[str, dict[int, list[dict]]]:
    figures: dict[str, dict[int, list[dict]]] = {way: {level: [] for level in levels} for way in WAYS}
    for round_index in range(rounds):
        order = list(WAYS) if round_index % 2 == 0 else list(reversed(WAYS))
        for way in order:
            os.environ["LAUNCHKIT_BATCH_AHEAD"] = WAYS[way]
            try:
                with Served(archive, *args) as server:
                    for level in levels:
                        result = drive(f"{server.url}/predictions/{name}", body, content_type, level, seconds)
                        figures[way][level].append(result)
                        print(f"{name} round {round_index + 1} {way} c={level}: {result['req/s']:,.0f} req/s, "
                              f"p99 {result['p99 ms']:.2f} ms", file=sys.stderr, flush=True)
            finally:
                os.environ.pop("LAUNCHKIT_BATCH_AHEAD", None)
    return figures


def median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,4,16")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-resnet", action="store_true")
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    cores = len(os.sched_getaffinity(0))
    work = Path(tempfile.mkdtemp(prefix="lk-ahead-"))
    names = ["tiny"] + ([] if args.no_resnet else ["resnet18"])
    subprocess.run([sys.executable, "-m", "launchkit.examples.build", "--export-path", str(work), *names],
                   check=True, capture_output=True)
    tiny_body = struct.pack("<64f", *[i / 64 for i in range(64)])  # a raw float32 row
    scenarios = [("tiny", ["--workers", "1", "--batch-size", "1"], tiny_body, "application/octet-stream")]
    if not args.no_resnet:
        image = struct.pack("<150528f", *([0.5] * 150528))  # a raw float32 3×224×224 sample
        scenarios.append(("resnet18", ["--workers", "2", "--batch-size", "1"], image, "application/octet-stream"))
    checks: list[Check] = []
    rows = []
    data: dict = {"cores": cores, "levels": levels, "rounds": args.rounds}
    for name, serve_args, body, content_type in scenarios:
        figures = scenario(work / f"{name}.mar", name, serve_args, body, content_type, levels, args.seconds,
                           args.rounds)
        data[name] = figures
        for level in levels:
            ahead, none = figures["ahead"][level], figures["none"][level]
            errors = sum(run["errors"] for run in ahead + none)
            rows.append([name, " ".join(serve_args), level, f"{median(none, 'req/s'):,.0f}",
                         f"{median(ahead, 'req/s'):,.0f}", f"{median(ahead, 'req/s') / median(none, 'req/s'):.2f}",
                         f"{median(none, 'p50 ms'):.2f} / {median(none, 'p99 ms'):.2f}",
                         f"{median(ahead, 'p50 ms'):.2f} / {median(ahead, 'p99 ms'):.2f}", errors])
            scene = f"{name}, {' '.join(serve_args)}, {cores} cores, c={level}"
            if name == "tiny" and level >= 4:
                checks.append(relative(scene, "req/s with a batch ahead", median(ahead, "req/s"),
                                       median(none, "req/s"), 1.2, higher=True, errors=errors,
                                       peer_name="without (batch_ahead=false)"))
            elif name == "resnet18":
                checks.append(relative(scene, "req/s with a batch ahead", median(ahead, "req/s"),
                                       median(none, "req/s"), 0.95, higher=True, errors=errors,
                                       peer_name="without (batch_ahead=false)"))
                checks.append(relative(scene, "p99 ms with a batch ahead", median(ahead, "p99 ms"),
                                       median(none, "p99 ms"), 1.10, higher=False, errors=errors,
                                       peer_name="without (batch_ahead=false)"))
    table = markdown_table(["model", "serving", "c", "req/s without", "req/s ahead", "ratio",
                            "p50 / p99 ms without", "p50 / p99 ms ahead", "errors"], rows)
    return write(results_dir("batch-ahead"), f"A batch ahead against none ({cores} cores)", table, data, checks)


if __name__ == "__main__":
    sys.exit(main())
