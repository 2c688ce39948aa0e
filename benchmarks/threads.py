"""How many OpenMP threads a small model's call gains from, and what waiting threads cost.

    python benchmarks/threads.py [--models tiny,mnist,resnet18] [--batches 1,8] [--threads 1,2,4,8,16]
    python benchmarks/threads.py --part served [--models ...] [--levels 4:16:12] [--seconds 6] [--rounds 2]

Each bundled model is called in process (no server), batch by batch, at each thread count, once
with each of GNU OpenMP's ways to wait between parallel regions (POLICIES below; sleeping at once
is what a worker of a model under 8 MiB gets), each in a process of its own (libgomp reads them
once). The medians of five rounds, ms per call, and each count's speed-up over
one thread. Thread counts above this machine's CPUs are left out.
``--part served``: ``launchkit bench`` on each bundled example (one worker, batch 1), its worker
given every core with threads that sleep at once (``--omp-wait passive``), one core
(``--ncores-per-instance 1``, a small model's default since 2026-12-03), every core with threads that spin
10,000 turns (``brief``, a small model's default before) and every core with GNU's default spin, in turns, the medians of the
rounds; ratios against the first. Writes results/<ts>-threads/. No verdicts: this is what the worker's thread
rule is chosen from (docs/figures.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from _report import markdown_table, results_dir, write  # noqa: E402


# GNU OpenMP's waits: sleep at once (a small model's worker), spin about 10,000 turns (libgomp
# reckons 100,000 a millisecond) then sleep, and its default (300,000 turns, then sleep)
POLICIES = {"sleep at once": {"OMP_WAIT_POLICY": "PASSIVE"}, "spin 10k turns": {"GOMP_SPINCOUNT": "10000"},
            "default (300k turns)": {}}


def model_and_input(name: str, batch: int):  # noqa: ANN201 (a torch module and tensor, torch imported late)
    import torch

    if name == "tiny":
        from launchkit.examples.tiny import tiny_mlp

        return tiny_mlp(), torch.rand(batch, 64)
    if name == "mnist":
        from launchkit.examples.mnist import digit_net

        return digit_net(), torch.rand(batch, 1, 28, 28)
    if name == "resnet18":
        from launchkit.examples.resnet import resnet18

        return resnet18(), torch.rand(batch, 3, 224, 224)
    raise SystemExit(f"unknown model {name!r}: tiny, mnist or resnet18")  # (served: a .mar path too)


def measure(models: list[str], batches: list[int], threads: list[int]) -> list[dict]:
    """In this process (its OMP_WAIT_POLICY already set): ms per call for each combination."""
    import torch

    rows = []
    for name in models:
        for batch in batches:
            model, example = model_and_input(name, batch)
            for count in threads:
                torch.set_num_threads(count)
                with torch.inference_mode():
                    started, warm = time.perf_counter(), 0
                    while time.perf_counter() - started < 0.3:  # warm: the team exists, caches are hot
                        model(example)
                        warm += 1
                    calls = max(3, int(0.15 / ((time.perf_counter() - started) / warm)))  # ~0.15 s a round
                    rounds = []
                    for _ in range(5):
                        started = time.perf_counter()
                        for _ in range(calls):
                            model(example)
                        rounds.append((time.perf_counter() - started) / calls * 1000)
                rows.append({"model": name, "batch": batch, "threads": count, "ms": statistics.median(rounds)})
    return rows


def served(models: list[str], levels: str, seconds: float, rounds: int, folder: Path) -> tuple[str, dict]:
    """req/s and p99 of one worker given every core, and given one."""
    # (before 2026-12-03 "every core" slept at once, and "every core, brief" was measured as
    # --omp-wait spin with GOMP_SPINCOUNT=10000 set by hand: the variables brief sets now)
    # (since 2026-12-03 a small model at batch 1 runs on one core by default, so "every core" names
    # the count: --ncores-per-instance with every core of this machine)
    every = f"--ncores-per-instance {len(os.sched_getaffinity(0))}"
    ways = {"every core, passive": (["--cpu-launcher-args", f"{every} --omp-wait passive"], {}),
            "one core": (["--cpu-launcher-args", "--ncores-per-instance 1"], {}),
            "every core, brief": (["--cpu-launcher-args", f"{every} --omp-wait brief"], {}),
            "every core, spin 300k": (["--cpu-launcher-args", f"{every} --omp-wait spin"], {})}
    figures: dict[str, dict[str, list[dict]]] = {}
    for name in models:
        for round_number in range(rounds):
            for way, (flags, variables) in (ways.items() if round_number % 2 == 0 else reversed(ways.items())):
                report = Path(tempfile.mkdtemp()) / "report"  # only its summary is kept (in summary.json)
                subprocess.run([sys.executable, "-m", "launchkit", "bench", name, "--concurrency-range", levels,
                                "--duration", str(seconds), "--warmup", "1s", "--quiet",
                                "--report-dir", str(report), *flags], check=True, stdout=subprocess.DEVNULL,
                               env=dict(os.environ) | variables)
                summary = json.loads((report / "summary.json").read_text())
                threads_used = summary["server"]["workers"][0]["threads"]
                shutil.rmtree(report.parent)
                for level in summary["levels"]:
                    figures.setdefault(f"{Path(name).stem} {level['level']}", {}).setdefault(way, []).append(
                        {"rps": level["throughput"], "p99": level["latency_ms"]["p99"],
                         "errors": level["requests_failed"], "threads": threads_used})
            print(f"threads: {name} round {round_number + 1} served", flush=True)
    rows = []
    for scenario, by_way in figures.items():
        team = statistics.median(r["rps"] for r in by_way["every core, passive"])
        row = [scenario, by_way["every core, passive"][0]["threads"]]
        for way in ways:
            runs = by_way[way]
            rps = statistics.median(r["rps"] for r in runs)
            row += [f"{rps:,.0f} ({rps / team:.2f})", f"{statistics.median(r['p99'] for r in runs):.2f}"]
        rows.append(row + [sum(r["errors"] for runs in by_way.values() for r in runs)])
    headers = ["model, level", "threads (every core)"]
    for way in ways:
        headers += [f"{way}: req/s (÷ passive)", "p99 ms"]
    table = markdown_table(headers + ["errors"], rows)
    return table, figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,mnist,resnet18")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", default="1,2,4,8,16")
    parser.add_argument("--part", choices=("in-process", "served"), default="in-process")
    parser.add_argument("--levels", default="4:16:12", help="served: concurrency levels, START:END[:STEP]")
    parser.add_argument("--seconds", type=float, default=6.0, help="served: seconds per level")
    parser.add_argument("--rounds", type=int, default=2, help="served: rounds (the two ways alternate)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the measuring process: prints JSON rows
    options = parser.parse_args()
    models = options.models.split(",")
    batches = [int(b) for b in options.batches.split(",")]
    threads = [t for t in (int(t) for t in options.threads.split(",")) if t <= len(os.sched_getaffinity(0))]
    if options.child:
        print(json.dumps(measure(models, batches, threads)))
        return 0
    if options.part == "served":
        folder = results_dir("threads-served")
        table, figures = served(models, options.levels, options.seconds, options.rounds, folder)
        return write(folder, "One worker: every core or one, and how its threads wait, served", table, figures)
    results: dict[str, list[dict]] = {}
    for policy, variables in POLICIES.items():
        env = {key: value for key, value in os.environ.items()
               if key not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        done = subprocess.run([sys.executable, __file__, "--child", policy, "--models", options.models,
                               "--batches", options.batches, "--threads", options.threads],
                              env=env | variables, capture_output=True, text=True, check=True)
        results[policy] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"threads: {policy} measured", flush=True)
    table_rows = []
    for index, first in enumerate(results["sleep at once"]):
        row = [first["model"], first["batch"], first["threads"]]
        for rows in results.values():
            one = next(r["ms"] for r in rows if (r["model"], r["batch"], r["threads"]) ==
                       (first["model"], first["batch"], 1))
            row += [f"{rows[index]['ms']:.3f}", f"{one / rows[index]['ms']:.2f}×"]
        table_rows.append(row)
    headers = ["model", "batch", "threads"]
    for policy in POLICIES:
        headers += [f"{policy}: ms/call", "speed-up over 1 thread"]
    table = markdown_table(headers, table_rows)
    return write(results_dir("threads"), "A small model's call at each OpenMP thread count", table, results)


if __name__ == "__main__":
    sys.exit(main())
