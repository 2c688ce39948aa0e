"""Start-up cost of the launcher: how much later does the program start than with plain python?

    python benchmarks/startup.py [--runs 15]

Interleaves, round by round (so drifts in machine load hit every variant alike):
  python trivial.py                                  (the baseline)
  launchkit run trivial.py                           (default: numactl, tcmalloc, Intel OpenMP)
  launchkit run --use-default-allocator --omp-runtime gnu --disable-numactl trivial.py
  python -m torch.backends.xeon.run_cpu trivial.py   (the anchor)
and the bare launcher cost on a program that does nothing (``true``). trivial.py imports torch.
Prints medians and the overhead over the baseline; target (issue 24): launchkit run adds ≤ 5 % to
the baseline's start. Writes results/<ts>-startup/.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import absolute, markdown_table, results_dir, write  # noqa: E402

HERE = Path(__file__).parent
TRIVIAL = str(HERE / "trivial.py")
PY = sys.executable


def variants() -> dict[str, list[str]]:
    launchkit = [PY, "-m", "launchkit", "run"]
    return {
        "python trivial.py": [PY, TRIVIAL],
        "launchkit run trivial.py": [*launchkit, TRIVIAL],
        "launchkit run (no preload, no numactl)": [*launchkit, "--use-default-allocator", "--omp-runtime", "gnu",
                                                   "--disable-numactl", TRIVIAL],
        "run_cpu trivial.py": [PY, "-m", "torch.backends.xeon.run_cpu", TRIVIAL],
        "true": ["true"],
        "launchkit run --no-python true": [*launchkit, "--no-python", "true"],
    }


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--skip-run-cpu", action="store_true", help="leave out torch's run_cpu")
    args = parser.parse_args()
    env_note = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "LD_PRELOAD")}
    chosen = variants()
    if args.skip_run_cpu:
        chosen.pop("run_cpu trivial.py")
    samples: dict[str, list[float]] = {name: [] for name in chosen}
    for name, argv in chosen.items():  # warm the page cache once
        timed(argv)
    for round_index in range(args.runs):
        for name, argv in chosen.items():
            samples[name].append(timed(argv))
        print(f"round {round_index + 1}/{args.runs}", file=sys.stderr, end="\r")
    medians = {name: statistics.median(values) for name, values in samples.items()}
    base, bare = medians["python trivial.py"], medians["true"]
    rows = []
    for name, values in samples.items():
        reference = bare if "true" in name else base
        rows.append([name, f"{medians[name]:.3f}", f"{min(values):.3f}", f"{max(values):.3f}",
                     "—" if name in ("python trivial.py", "true") else f"{medians[name] - reference:+.3f}"])
    table = markdown_table(["command", "median s", "min s", "max s", "added vs baseline s"], rows)
    folder = results_dir("startup")
    added = medians["launchkit run trivial.py"] - base
    # issue 24: the launcher adds at most 5 % to the start of a program that imports torch
    checks = [absolute("launchkit run trivial.py", f"% added to python trivial.py's {base:.2f} s start",
                       100 * added / base, 5, " %", higher=False,
                       peer=100 * (medians["run_cpu trivial.py"] - base) / base if "run_cpu trivial.py" in medians
                       else None, peer_name="run_cpu (% added)")]
    return write(folder, f"Launcher start-up cost ({args.runs} interleaved runs each)", table,
                 {"runs": args.runs, "samples": samples, "medians": medians, "env": env_note}, checks)


if __name__ == "__main__":
    sys.exit(main())
