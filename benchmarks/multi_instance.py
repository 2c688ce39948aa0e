"""Multi-instance throughput: batch-1 ResNet-18 images/s summed over instances.

    python benchmarks/multi_instance.py [--duration 15] [--instances 4] [--only NAME ...]

Compares, on the same machine and the same measurement window length:
  1 process × all threads          plain python, torch's default thread count
  naive × K                        K unpinned processes, default threads each (oversubscribed)
  run_cpu --ninstances K           torch.backends.xeon.run_cpu, the anchor
  launchkit --ninstances K         the same split through launchkit
  run_cpu / launchkit with one core per instance, and launchkit with 2 cores per instance
Every instance warms up, then all start together on a signal and run for --duration seconds.
Writes results/<ts>-multi-instance/ (report.md, summary.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import markdown_table, relative, results_dir, write  # noqa: E402

HERE = Path(__file__).parent
WORKER = str(HERE / "resnet_worker.py")
PY = sys.executable


def configs(cores: int, instances: int) -> dict[str, tuple[list[list[str]], int]]:
    """name -> (commands to start, number of worker instances they produce)."""
    launchkit = [PY, "-m", "launchkit", "run"]
    run_cpu = [PY, "-m", "torch.backends.xeon.run_cpu"]
    return {
        "1 process x all threads": ([[PY, WORKER]], 1),
        f"naive x {instances} (unpinned)": ([[PY, WORKER] for _ in range(instances)], instances),
        f"run_cpu --ninstances {instances}": ([[*run_cpu, "--ninstances", str(instances), WORKER]], instances),
        f"launchkit --ninstances {instances}": ([[*launchkit, "--ninstances", str(instances), WORKER]], instances),
        f"run_cpu --ninstances {cores}": ([[*run_cpu, "--ninstances", str(cores), WORKER]], cores),
        "launchkit --ncores-per-instance 1": ([[*launchkit, "--ncores-per-instance", "1", WORKER]], cores),
        "launchkit --ncores-per-instance 2": ([[*launchkit, "--ncores-per-instance", "2", WORKER]], cores // 2),
    }


def measure(commands: list[list[str]], expected: int, duration: float, timeout: float) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="lk-multi-"))
    procs = []
    log = open(folder / "stderr.log", "w")  # noqa: SIM115
    try:
        for command in commands:
            argv = [*command, "--dir", str(folder), "--duration", str(duration)]
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True))
        deadline = time.time() + timeout
        while len(list(folder.glob("ready.*"))) < expected:
            if time.time() > deadline or any(p.poll() not in (None, 0) for p in procs):
                raise RuntimeError(f"only {len(list(folder.glob('ready.*')))}/{expected} instances got ready; "
                                   f"see {folder}/stderr.log")
            time.sleep(0.05)
        (folder / "go.tmp").write_text(str(time.time() + 0.5))
        (folder / "go.tmp").rename(folder / "go")
        for proc in procs:
            proc.wait(timeout=duration + timeout)
        results = [json.loads(path.read_text()) for path in folder.glob("result.*")]
        if len(results) != expected:
            raise RuntimeError(f"{len(results)}/{expected} results; see {folder}/stderr.log")
        return {
            "images_per_s": sum(r["images_per_s"] for r in results),
            "instances": len(results),
            "threads": sorted(r["threads"] for r in results),
            "affinities": [r["affinity"] for r in sorted(results, key=lambda r: r["affinity"])],
        }
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds allowed for start-up and warm-up")
    parser.add_argument("--only", nargs="*", help="substrings of the configurations to run")
    parser.add_argument("--trials", type=int, default=1,
                        help="rounds over all configurations (order reversed every other round); medians reported")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    chosen = configs(cores, args.instances)
    if args.only:
        chosen = {name: value for name, value in chosen.items() if any(part in name for part in args.only)}
    trials: dict[str, list[dict]] = {name: [] for name in chosen}
    for trial in range(args.trials):
        names = list(chosen) if trial % 2 == 0 else list(reversed(chosen))
        for name in names:
            commands, expected = chosen[name]
            print(f"trial {trial + 1}/{args.trials}: {name} ...", file=sys.stderr, flush=True)
            try:
                trials[name].append(measure(commands, expected, args.duration, args.timeout))
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                trials[name].append({"error": str(error)})
            last = trials[name][-1]
            print(f"  {last.get('images_per_s', last.get('error'))}", file=sys.stderr, flush=True)
    measured = {name: _median_trial(runs) for name, runs in trials.items()}
    base = measured.get("1 process x all threads", {}).get("images_per_s")
    rows = []
    for name, data in measured.items():
        if "error" in data:
            rows.append([name, "-", "-", "-", data["error"][:80]])
            continue
        ratio = f"{data['images_per_s'] / base:.2f}" if base else "-"
        spread = f"{min(data['all_images_per_s']):.1f}–{max(data['all_images_per_s']):.1f}"
        rows.append([name, data["instances"], ",".join(map(str, sorted(set(data["threads"])))),
                     f"{data['images_per_s']:.1f}", spread, ratio])
    table = markdown_table(["configuration", "instances", "threads each", "images/s (median)", "range",
                            "× 1 process"], rows)
    rate = lambda name: measured.get(name, {}).get("images_per_s")  # noqa: E731
    failures = sum(1 for runs in trials.values() for run in runs if "error" in run)
    checks = []
    if rate(f"launchkit --ninstances {args.instances}") and rate(f"run_cpu --ninstances {args.instances}"):
        checks.append(relative(f"{args.instances} instances", "images/s", rate(f"launchkit --ninstances {args.instances}"),
                               rate(f"run_cpu --ninstances {args.instances}"), 1.0, higher=True, errors=failures,
                               peer_name=f"run_cpu --ninstances {args.instances}"))
    best = max((name for name in measured if name.startswith("launchkit") and rate(name)), key=rate, default=None)
    if best and rate(f"run_cpu --ninstances {cores}"):
        checks.append(relative(f"best recipe ({best})", "images/s", rate(best), rate(f"run_cpu --ninstances {cores}"),
                               1.0, higher=True, errors=failures, peer_name=f"run_cpu --ninstances {cores}"))
    # no typed-in target: a figure from another day is no peer; the peers are measured above, in this run
    return write(results_dir("multi-instance"), f"ResNet-18 batch 1, {cores} CPUs, {args.duration:g} s window", table,
                 {"duration": args.duration, "cores": cores, "trials": args.trials, "results": measured, "raw": trials},
                 checks)


def _median_trial(runs: list[dict]) -> dict:
    good = [run for run in runs if "error" not in run]
    if not good:
        return runs[-1]
    rates = sorted(run["images_per_s"] for run in good)
    middle = sorted(good, key=lambda run: run["images_per_s"])[len(good) // 2]
    return {**middle, "images_per_s": statistics.median(rates), "all_images_per_s": rates}


if __name__ == "__main__":
    sys.exit(main())
