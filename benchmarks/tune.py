"""`launchkit tune` against the figures of its issue (issue 14).

    python benchmarks/tune.py [--models tiny,resnet18,minilm] [--max-time 6m] [--replay-seconds 10]
    python benchmarks/tune.py --recipe          # the 16-core comparison (on the lent machine)

For each model, quick mode under its budget (tiny p99 ≤ 5 ms, resnet18 and minilm p99 ≤ 200 ms):
1. the best configuration's throughput ÷ the default configuration's, both measured by this tune
   run under the same budget (target ≥ 1.3×), and the search's wall time (target ≤ 10 min);
2. replay: `launchkit serve --ts-config best/config.properties` started afresh, driven by
   `launchkit bench` at the best configuration's concurrency (three runs, the median); its
   throughput ÷ the one tune reported (target within ±15 %).

``--recipe`` adds (or, with ``--models resnet18``, is) the lent-machine scenario: resnet18 tuned
against the better of the default configuration and a run_cpu-style recipe (4 workers × 4 cores,
each with its share of the threads), the recipe measured by tune itself in the same way (brute
mode over that one configuration), target ≥ 1.15×.

Verdicts are computed from this run's numbers; writes results/<ts>-tune/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from _report import absolute, markdown_table, relative, results_dir, write  # noqa: E402

PY = sys.executable
REPLAYS = 3
BUDGETS = {"tiny": 5.0, "resnet18": 200.0, "minilm": 200.0, "mnist": 5.0}


def tune(work: Path, model: str, budget: float, max_time: str, *extra: str) -> tuple[dict, float]:
    folder = work / f"tune-{model}-{len(list(work.iterdir()))}"
    started = time.monotonic()
    result = subprocess.run([PY, "-m", "launchkit", "tune", model, "--latency-budget", f"{budget:g}", "--max-time",
                             max_time, "--report-dir", str(folder), *extra], capture_output=True, text=True)
    elapsed = time.monotonic() - started
    print(result.stderr[-4000:], file=sys.stderr)
    if result.returncode not in (0, 7):
        raise SystemExit(f"launchkit tune {model} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    summary = json.loads((folder / "summary.json").read_text())
    summary["folder"] = str(folder)
    return summary, elapsed


def free_ports(count: int) -> list[int]:
    from launchkit.core.ports import free_ports as ports

    return ports(count)


def replay(summary: dict, work: Path, seconds: float) -> dict:
    """Serve best/config.properties afresh and bench it at the reported concurrency."""
    from launchkit.bench.inputs import declared_input
    from launchkit.launch.spawn import spawn, stop

    best = summary["best"]
    folder = Path(summary["folder"])
    config = (work / f"replay-{summary['model']}.properties").resolve()
    port, management, metrics = free_ports(3)
    config.write_text((folder / "best" / "config.properties").read_text()
                      + f"inference_address=http://127.0.0.1:{port}\nmanagement_address=http://127.0.0.1:{management}\n"
                        f"metrics_address=http://127.0.0.1:{metrics}\n")
    sample = declared_input(Path(summary["archive"]))
    assert sample is not None
    body = work / f"replay-{summary['model']}.body"
    body.write_bytes(sample.body)
    log = open(work / f"replay-{summary['model']}.log", "w")  # noqa: SIM115 - closed below
    server = spawn([PY, "-m", "launchkit", "serve", "--ts-config", str(config)], stdout=log, stderr=subprocess.STDOUT,
                   cwd=tempfile.gettempdir())  # any directory: the properties name the archive by absolute path
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit(f"the replayed server did not start; see {log.name}")
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port}/predictions/{summary['model']}"
        runs = []
        for attempt in range(REPLAYS):  # this VM's run-to-run noise is ±20 %: the median of three
            report = work / f"replay-{summary['model']}-bench-{attempt}"
            result = subprocess.run([PY, "-m", "launchkit", "bench", url, "-c", str(best["concurrency"]), "--duration",
                                     f"{seconds:g}", "--warmup", "2s", "--input", str(body), "--content-type",
                                     sample.content_type, "--report-dir", str(report), "-q"], capture_output=True,
                                    text=True)
            if result.returncode != 0:
                raise SystemExit(f"launchkit bench (replay) failed:\n{result.stderr[-2000:]}")
            runs.append(json.loads((report / "summary.json").read_text())["levels"][0])
        middle = sorted(runs, key=lambda level: level["throughput"])[len(runs) // 2]
        return {"throughput_rps": middle["throughput"], "p99_ms": middle["latency_ms"]["p99"],
                "failed": sum(level["requests_failed"] for level in runs),
                "all_rps": [level["throughput"] for level in runs]}
    finally:
        stop(server, grace_s=20.0)
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,resnet18,minilm")
    parser.add_argument("--max-time", default="6m", help="launchkit tune --max-time per model (the target: 10 min)")
    parser.add_argument("--replay-seconds", type=float, default=6.0)
    parser.add_argument("--level-seconds", default="3", help="launchkit tune --level-seconds")
    parser.add_argument("--recipe", action="store_true", help="also measure resnet18's run_cpu-style recipe")
    parser.add_argument("--recipe-workers", type=int, default=4)
    args = parser.parse_args()
    work = results_dir("tune")  # each tune run's own report goes in a subfolder
    rows, data, checks = [], {}, []
    for model in args.models.split(","):
        budget = BUDGETS[model]
        summary, elapsed = tune(work, model, budget, args.max_time, "--level-seconds", args.level_seconds)
        default, best = summary["default"], summary["best"]
        figure = {"elapsed_s": elapsed, "trials": len(summary["trials"]), "verdict": summary["verdict"],
                  "default": default, "best": best}
        scenario = f"{model}, quick mode, p99 ≤ {budget:g} ms"
        if best is None:
            rows.append([model, "-", "-", "-", len(summary["trials"]), f"{elapsed / 60:.1f}", "-", summary["verdict"]])
            checks.append(absolute(scenario, "a configuration within the budget", 0, 1, "", higher=True))
            data[model] = figure
            continue
        default_rps = default["throughput_rps"] if default and default["status"] == "ok" else None
        replayed = replay(summary, work, args.replay_seconds)
        figure["replay"] = replayed
        ratio = replayed["throughput_rps"] / best["throughput_rps"]
        rows.append([model, f"{default_rps:,.1f}" if default_rps else f"over budget ({default['status']})",
                     f"{best['throughput_rps']:,.1f} at c={best['concurrency']}, p99 {best['p99_ms']:.1f} ms",
                     best["label"], len(summary["trials"]), f"{elapsed / 60:.1f}",
                     f"{replayed['throughput_rps']:,.1f} ({ratio:.2f}×), p99 {replayed['p99_ms']:.1f} ms", ""])
        checks.append(relative(scenario, "best req/s", best["throughput_rps"], default_rps, 1.3, higher=True,
                               peer_name="the default configuration",
                               note="" if default_rps else "the default breaks the budget"))
        checks.append(absolute(scenario, "search time", elapsed / 60, 10, " min", higher=False))
        checks.append(absolute(scenario, "replayed ÷ reported req/s", ratio, 0.85, "", higher=True,
                               errors=replayed["failed"], note="bench on best/config.properties, served afresh"))
        checks.append(absolute(scenario, "replayed ÷ reported req/s", ratio, 1.15, "", higher=False,
                               errors=replayed["failed"]))
        if model == "resnet18" and args.recipe:
            space = (f"workers={args.recipe_workers};cores=auto;batch=1;delay=0;streams=1;variant=original;"
                     "wait=auto;allocator=auto;omp=auto")
            recipe, _ = tune(work, model, budget, "5m", "--mode", "brute", "--space", space, "--level-seconds",
                             args.level_seconds)
            recipe_trial = next((t for t in recipe["trials"] if t["config"]["workers"] == args.recipe_workers), None)
            recipe_rps = recipe_trial["throughput_rps"] if recipe_trial and recipe_trial["status"] == "ok" else None
            figure["recipe"] = recipe_trial
            peer = max(value for value in (default_rps, recipe_rps, 0.0) if value is not None) or None
            checks.append(relative(f"resnet18 vs a run_cpu-style recipe ({args.recipe_workers} workers, cores split)",
                                   "best req/s", best["throughput_rps"], peer, 1.15, higher=True,
                                   peer_name="the better of default and recipe",
                                   note=f"recipe {recipe_rps or 0:,.1f} req/s, default {default_rps or 0:,.1f} req/s"))
        data[model] = figure
    table = markdown_table(["model", "default req/s", "best", "best configuration", "trials", "minutes",
                            "replayed with bench", "note"], rows)
    return write(work, "launchkit tune: best vs default configuration", table, data, checks)


if __name__ == "__main__":
    sys.exit(main())
