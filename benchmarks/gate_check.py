"""Does scripts/perf-gate.sh tell a regression from the machine's noise? Runs it, in one run.

    python benchmarks/gate_check.py [--clean 8] [--planted 3]

Runs the gate ``--clean`` times on this checkout's mnist example (a false alarm is an exit 3) and
``--planted`` times on a planted regression: the same archive whose handler calls the model twice
per batch (exit 3 expected), the two kinds interleaved so that a slow spell of the machine falls on
both. Each run's judged inference change is read from the gate's own table. Verdicts: no false
alarm; every planted regression caught. Writes results/<ts>-gate-check/.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import Check, markdown_table, results_dir, write  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TWICE = '''

    def inference(self, data, *args, **kwargs):  # planted by benchmarks/gate_check.py: the model twice
        super().inference(data, *args, **kwargs)
        return super().inference(data, *args, **kwargs)
'''


def planted_archive(folder: Path) -> Path:
    """The mnist example's archive with a handler that runs the model twice per batch."""
    subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "launchkit.examples.build", "--export-path", str(folder),
                    "mnist"], check=True, stdout=subprocess.DEVNULL)
    source, planted = folder / "mnist.mar", folder / "slow-mnist.mar"
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(planted, "w", zipfile.ZIP_DEFLATED) as out:
        for item in original.infolist():
            data = original.read(item)
            if item.filename == "mnist_handler.py":
                data += TWICE.encode()
            out.writestr(item, data)
    return planted


def run_gate(archive: Path | None) -> dict:
    started = time.monotonic()
    done = subprocess.run(["bash", str(ROOT / "scripts/perf-gate.sh"), *([str(archive)] if archive else [])],
                          cwd=ROOT, capture_output=True, text=True)
    changes = [float(m) for m in re.findall(r"inference *│[^│]*│[^│]*│ *([+-][\d.]+)%", done.stdout)]
    limits = re.findall(r"limit inference=\+(\d+)%", done.stdout)
    changes = changes[:len(limits)]  # a failed gate prints its last table again
    return {"planted": archive is not None, "exit": done.returncode, "changes_pct": changes,
            "limits_pct": [int(limit) for limit in limits], "seconds": round(time.monotonic() - started, 1),
            "tail": done.stdout.strip().splitlines()[-3:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clean", type=int, default=8, help="runs on this checkout (false alarms counted)")
    parser.add_argument("--planted", type=int, default=3, help="runs on the planted regression (catches counted)")
    options = parser.parse_args()
    folder = results_dir("gate-check")
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        planted = planted_archive(Path(scratch))
        order = ["clean"] * options.clean
        for index in range(options.planted):  # spread the planted runs through the clean ones
            order.insert(round((index + 1) * len(order) / (options.planted + 1)) + index, "planted")
        for number, kind in enumerate(order, 1):
            run = run_gate(planted if kind == "planted" else None)
            runs.append(run)
            print(f"gate-check: {number}/{len(order)} {kind}: exit {run['exit']}, inference "
                  f"{', '.join(f'{c:+.1f} %' for c in run['changes_pct'])} (limits {run['limits_pct']}), "
                  f"{run['seconds']} s", flush=True)
    broken = [run for run in runs if run["exit"] not in (0, 3)]
    clean = [run for run in runs if not run["planted"]]
    caught = [run for run in runs if run["planted"]]
    checks = [
        Check("clean checkout", "false alarms (exit 3)", sum(run["exit"] == 3 for run in clean), "0",
              not any(run["exit"] == 3 for run in clean), errors=len(broken)),
        Check("model called twice", "regressions caught (exit 3)", sum(run["exit"] == 3 for run in caught),
              f"{len(caught)} of {len(caught)}", all(run["exit"] == 3 for run in caught), errors=len(broken)),
    ]
    rows = [[number, "planted" if run["planted"] else "clean", run["exit"],
             ", ".join(f"{c:+.1f} %" for c in run["changes_pct"]), ", ".join(f"+{x} %" for x in run["limits_pct"]),
             run["seconds"]] for number, run in enumerate(runs, 1)]
    table = markdown_table(["run", "archive", "gate exit", "inference vs baseline (each judged run)",
                            "limit", "seconds"], rows)
    return write(folder, "The CI gate: false alarms and a planted regression", table, {"runs": runs}, checks)


if __name__ == "__main__":
    sys.exit(main())
