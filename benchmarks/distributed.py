"""`launchkit run` on torchrun's engine (issue 16's figures), against plain torchrun, in one run.

    python benchmarks/distributed.py [--repeats 5] [--megabytes 64] [--iterations 20] [--ranks 2]

1. Start-up: from the command to every rank running (each rank prints its wall-clock start),
   `launchkit run --nproc-per-node K` against `torchrun --standalone --nproc-per-node K`, median of
   --repeats, interleaved.
2. A gloo all_reduce of --megabytes MB between K local ranks (median of --iterations after 3
   warm-ups), pinned (launchkit: each rank on its own cores, OMP_NUM_THREADS = its cores) against
   unpinned (plain torchrun: every rank on every CPU), interleaved --repeats times.

Writes results/<ts>-distributed/.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import absolute, markdown_table, results_dir, write  # noqa: E402

PY = sys.executable
# each rank writes its start time to a file of its own (ranks' stdout lines can interleave)
STARTED = ("import os, sys, time; open(os.path.join(sys.argv[1], os.environ['RANK']), 'w').write(repr(time.time()))\n")
ALL_REDUCE = """
import os, statistics, sys, time
import torch, torch.distributed as dist
dist.init_process_group("gloo")
tensor = torch.ones(int(sys.argv[1]) * 2**20 // 4)
times = []
for i in range(3 + int(sys.argv[2])):
    dist.barrier()
    start = time.perf_counter()
    dist.all_reduce(tensor)
    if i >= 3:
        times.append(time.perf_counter() - start)
if dist.get_rank() == 0:
    print("median_s", statistics.median(times), flush=True)
dist.destroy_process_group()
"""


def command(kind: str, ranks: int, script: Path, *args: str) -> list[str]:
    if kind == "launchkit":
        return [PY, "-m", "launchkit", "run", "--nproc-per-node", str(ranks), str(script), *args]
    return [PY, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks), str(script), *args]


def start_up(kind: str, ranks: int, script: Path) -> float:
    folder = Path(tempfile.mkdtemp(prefix="lk-started-"))
    began = time.time()
    result = subprocess.run(command(kind, ranks, script, str(folder)), capture_output=True, text=True, timeout=120)
    starts = [float(path.read_text()) for path in folder.iterdir()]
    if result.returncode != 0 or len(starts) != ranks:
        raise SystemExit(f"{kind} failed:\n{result.stderr[-2000:]}")
    return max(starts) - began


def all_reduce(kind: str, ranks: int, script: Path, megabytes: int, iterations: int) -> float:
    result = subprocess.run(command(kind, ranks, script, str(megabytes), str(iterations)), capture_output=True,
                            text=True, timeout=600)
    found = [float(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("median_s")]
    if result.returncode != 0 or not found:
        raise SystemExit(f"{kind} all_reduce failed:\n{result.stderr[-2000:]}")
    return found[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--megabytes", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--ranks", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lk-dist-"))
    (work / "started.py").write_text(STARTED)
    (work / "all_reduce.py").write_text(ALL_REDUCE)
    kinds = ("launchkit", "torchrun")
    startup: dict[str, list[float]] = {kind: [] for kind in kinds}
    reduce: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(args.repeats):
        for kind in kinds:
            startup[kind].append(start_up(kind, args.ranks, work / "started.py"))
            reduce[kind].append(all_reduce(kind, args.ranks, work / "all_reduce.py", args.megabytes, args.iterations))
    start = {kind: statistics.median(values) for kind, values in startup.items()}
    seconds = {kind: statistics.median(values) for kind, values in reduce.items()}
    gbps = {kind: args.megabytes / 1024 / value for kind, value in seconds.items()}
    rows = [[f"`launchkit run --nproc-per-node {args.ranks}` (pinned)", f"{start['launchkit']:.2f}",
             f"{seconds['launchkit'] * 1000:.1f}", f"{gbps['launchkit']:.2f}"],
            [f"`torchrun --standalone --nproc-per-node {args.ranks}` (unpinned)", f"{start['torchrun']:.2f}",
             f"{seconds['torchrun'] * 1000:.1f}", f"{gbps['torchrun']:.2f}"]]
    table = markdown_table(["command", "command → all ranks running, s (median)",
                            f"all_reduce {args.megabytes} MB, ms (median)", "GB/s"], rows)
    checks = [absolute("start-up, launchkit over torchrun", "added seconds", start["launchkit"] - start["torchrun"],
                       1.0, " s", higher=False, note="launchkit plans, then starts torchrun's own agent"),
              absolute(f"gloo all_reduce {args.megabytes} MB, {args.ranks} local ranks", "pinned ÷ unpinned time",
                       seconds["launchkit"] / seconds["torchrun"], 1.05, "", higher=False,
                       note="pinning must not slow the collective")]
    data = {"startup_s": startup, "all_reduce_s": reduce, "ranks": args.ranks, "megabytes": args.megabytes}
    return write(results_dir("distributed"), "launchkit run on torchrun's engine", table, data, checks)


if __name__ == "__main__":
    sys.exit(main())
