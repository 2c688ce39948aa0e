"""The long fuzzing run: every target of fuzz/targets.py under atheris, from the kept corpus.

    python benchmarks/fuzz.py [--seconds 120] [--targets v2_json,multipart] [--keep-corpus]

Per target: executions tried, edges of launchkit's parsers reached, inputs kept, crashes found (an
exception other than launchkit's own error, or more than 1 GiB for one input). Verdict per target:
no crash. Crash inputs stay in results/<ts>-fuzz/artifacts/; --keep-corpus copies the new inputs
into fuzz/corpus/ (commit the ones worth keeping). The suite's short run: tests/test_fuzz.py.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _report import absolute, markdown_table, results_dir, write  # noqa: E402

from fuzz.session import HERE as FUZZ, run_target  # noqa: E402
from fuzz.targets import TARGETS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=120, help="per target (default 120)")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated (default: all)")
    parser.add_argument("--keep-corpus", action="store_true", help="copy new inputs into fuzz/corpus/")
    args = parser.parse_args()
    names = [name.strip() for name in args.targets.split(",") if name.strip()]
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        parser.error(f"no such target(s) {', '.join(unknown)}; the targets are {', '.join(TARGETS)}")
    folder = results_dir("fuzz")
    runs = []
    for index, name in enumerate(names, 1):
        print(f"[{index}/{len(names)}] fuzzing {name} for {args.seconds} s", flush=True)
        run = run_target(name, args.seconds, folder)
        runs.append(run)
        print(f"    {run.executions:,} executions, coverage {run.coverage}, crashes: {len(run.crashes)}", flush=True)
        if args.keep_corpus:
            for found in (folder / "corpus" / name).iterdir():
                shutil.copy(found, FUZZ / "corpus" / name / found.name)
    rows = [[run.target, f"{run.executions:,}", f"{run.seconds:.0f}", f"{run.executions / max(run.seconds, 1):,.0f}",
             run.coverage, run.corpus, ", ".join(run.crashes) or "0"] for run in runs]
    table = markdown_table(["target", "executions", "seconds", "exec/s", "coverage (edges)", "corpus",
                            "crashes"], rows)
    total = sum(run.executions for run in runs)
    checks = [absolute(run.target, "crashes found", len(run.crashes), 0, "", higher=False) for run in runs]
    write(folder, f"Fuzzing the parsers: {total:,} executions, {args.seconds} s per target", table,
          {"seconds_per_target": args.seconds, "runs": [asdict(run) | {"output_tail": None} for run in runs]},
          checks)
    return 1 if any(run.crashes for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
