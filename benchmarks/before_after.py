"""A restructuring changes no speed: cold start and tiny throughput of this tree against an earlier
git revision, interleaved round by round.

    python benchmarks/before_after.py --before REV [--rounds 5] [--requests 4000] [--concurrency 4]
                                      [--serve-args 'FLAGS']

The earlier revision is checked out into a temporary git worktree. Each round starts `launchkit
serve` on the bundled tiny example from each tree in turn (the order alternates; PYTHONPATH picks
the tree, so the same interpreter and packages run both), times the start to the first correct
answer (cold start), then drives it with this tree's `launchkit bench` (the same client for both),
reading the CPU time its frontend and its workers spent per request (steadier than throughput on a
small, shared machine), and stops it. Both trees serve the same archive, so only the server's code differs. Verdicts:
throughput at least 0.95x and cold start at most 1.05x the earlier revision's (medians).
Writes results/<ts>-before-after/.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _report import absolute, markdown_table, results_dir, write  # noqa: E402
from launchkit.core.ports import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
START_DEADLINE_S = 120.0


def _path_first(tree: Path) -> str:
    """PYTHONPATH with ``tree`` first (what is there already stays: a machine may keep packages there)."""
    return os.pathsep.join(part for part in (str(tree), os.environ.get("PYTHONPATH", "")) if part)


def _answer(url: str, body: bytes) -> bytes | None:
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read() if response.status == 200 else None
    except (urllib.error.URLError, OSError):
        return None


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of the server's frontend and of all its descendants (the workers)."""
    frontend = psutil.Process(pid)
    children = 0.0
    for child in frontend.children(recursive=True):
        try:
            children += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return sum(frontend.cpu_times()[:2]), children


def serve_and_measure(tree: Path, archive: Path, sample: Path, expected: bytes | None, args: argparse.Namespace,
                      scratch: Path) -> tuple[float, float, float, float, bytes]:
    """(cold start s, throughput req/s, frontend and worker CPU µs per request, the answer) of `launchkit
    serve` from ``tree``."""
    port = free_port()
    command = [sys.executable, "-m", "launchkit", "serve", str(archive), "--inference-address",
               f"http://127.0.0.1:{port}", "--management-address", f"http://127.0.0.1:{free_port()}",
               "--metrics-address", f"http://127.0.0.1:{free_port()}", *shlex.split(args.serve_args)]
    env = {**os.environ, "PYTHONPATH": _path_first(tree)}
    url = f"http://127.0.0.1:{port}/predictions/tiny"
    body = sample.read_bytes()
    started = time.perf_counter()
    server = subprocess.Popen(command, env=env, cwd=scratch, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        while (answer := _answer(url, body)) is None:
            if time.perf_counter() - started > START_DEADLINE_S or server.poll() is not None:
                raise RuntimeError(f"the server from {tree} gave no answer within {START_DEADLINE_S:g} s")
            time.sleep(0.02)
        cold = time.perf_counter() - started
        if expected is not None and answer != expected:
            raise RuntimeError(f"the server from {tree} answers {answer[:80]!r}, the other {expected[:80]!r}")
        report = scratch / f"bench-{port}"
        cpu_before = _cpu_seconds(server.pid)
        done = subprocess.run([sys.executable, "-m", "launchkit", "bench", url, "-i", str(sample), "-c",
                               str(args.concurrency), "--requests", str(args.requests), "--warmup", "200", "--quiet",
                               "-rl", str(report)], env={**os.environ, "PYTHONPATH": _path_first(ROOT)},
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"bench failed: {done.stderr[-2000:]}")
        cpu_after = _cpu_seconds(server.pid)
        throughput = json.loads((report / "summary.json").read_text())["levels"][0]["throughput"]
        served = args.requests + 200  # the warm-up's requests too
        return (cold, throughput, 1e6 * (cpu_after[0] - cpu_before[0]) / served,
                1e6 * (cpu_after[1] - cpu_before[1]) / served, answer)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the earlier git revision (a commit, tag or branch)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--serve-args", default="", metavar="'FLAGS'",
                        help="more `launchkit serve` flags for both trees, e.g. \"--cpu-launcher-args "
                             "'--ncores-per-instance 2'\" to hold the worker's cores equal where the default changed")
    args = parser.parse_args()
    before = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.before], capture_output=True,
                            text=True, check=True).stdout.strip()
    sys.path.insert(0, str(ROOT))
    from launchkit.examples.cache import ensure_examples

    archive = ensure_examples(("tiny",))[0]
    with tempfile.TemporaryDirectory(prefix="launchkit-before-after-") as folder:
        scratch = Path(folder)
        sample = scratch / "sample.bin"
        sample.write_bytes(zipfile.ZipFile(archive).read("sample.bin"))
        tree = scratch / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), before], check=True,
                       capture_output=True)
        trees = {f"before ({before})": tree, "now": ROOT}
        figures: dict[str, dict[str, list[float]]] = {name: {"cold": [], "throughput": [], "frontend_us": [],
                                                              "worker_us": []} for name in trees}
        expected = None
        try:
            for round_index in range(args.rounds):
                order = list(trees) if round_index % 2 == 0 else list(trees)[::-1]
                for name in order:
                    cold, throughput, frontend, worker, expected = serve_and_measure(
                        trees[name], archive, sample, expected, args, scratch)
                    for key, value in (("cold", cold), ("throughput", throughput), ("frontend_us", frontend),
                                       ("worker_us", worker)):
                        figures[name][key].append(value)
                    print(f"round {round_index + 1}/{args.rounds} {name}: cold start {cold:.2f} s, "
                          f"{throughput:,.0f} req/s, CPU per request: frontend {frontend:.0f} µs, workers "
                          f"{worker:.0f} µs", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
    old, new = figures[f"before ({before})"], figures["now"]
    median = {name: {key: statistics.median(values) for key, values in figure.items()} for name, figure in
              figures.items()}
    rows = [[name, f"{values['cold']:.2f}", f"{values['throughput']:,.0f}", f"{values['frontend_us']:.0f}",
             f"{values['worker_us']:.0f}", " ".join(f"{v:.2f}" for v in figures[name]["cold"]),
             " ".join(f"{v:,.0f}" for v in figures[name]["throughput"])] for name, values in median.items()]
    table = markdown_table(["tree", "cold start s", "tiny req/s", "frontend CPU µs/request",
                            "workers' CPU µs/request", "cold starts", "throughputs"], rows)
    table += "\n\nMedians over the rounds; each round's figures after."
    checks = [
        absolute("tiny, c=%d" % args.concurrency, "throughput now ÷ before",
                 statistics.median(new["throughput"]) / statistics.median(old["throughput"]), 0.95, "×", higher=True),
        absolute("cold start to the first answer", "now ÷ before",
                 statistics.median(new["cold"]) / statistics.median(old["cold"]), 1.05, "×", higher=False),
    ]
    return write(results_dir("before-after"), f"Before and after: this tree against {before}, {args.rounds} "
                                              f"interleaved rounds", table,
                 {"before": before, "figures": figures, "args": vars(args)}, checks)


if __name__ == "__main__":
    sys.exit(main())
