"""A restructuring changes no speed: cold start and tiny throughput of this tree against an earlier
git revision, interleaved round by round.

    python benchmarks/before_after.py --before REV [--rounds 5] [--requests 4000] [--concurrency 4]

The earlier revision is checked out into a temporary git worktree. Each round starts `launchkit
serve` on the bundled tiny example from each tree in turn (the order alternates; PYTHONPATH picks
the tree, so the same interpreter and packages run both), times the start to the first correct
answer (cold start), then drives it with this tree's `launchkit bench` (the same client for both)
and stops it. Both trees serve the same archive, so only the server's code differs. Verdicts:
throughput at least 0.95x and cold start at most 1.05x the earlier revision's (medians).
Writes results/<ts>-before-after/.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import absolute, markdown_table, results_dir, write  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
START_DEADLINE_S = 120.0


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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


def serve_and_measure(tree: Path, archive: Path, sample: Path, expected: bytes | None, args: argparse.Namespace,
                      scratch: Path) -> tuple[float, float, bytes]:
    """(cold start s, throughput req/s, the answer) of `launchkit serve` from ``tree``."""
    port = _port()
    command = [sys.executable, "-m", "launchkit", "serve", str(archive), "--inference-address",
               f"http://127.0.0.1:{port}", "--management-address", f"http://127.0.0.1:{_port()}",
               "--metrics-address", f"http://127.0.0.1:{_port()}"]
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
        done = subprocess.run([sys.executable, "-m", "launchkit", "bench", url, "-i", str(sample), "-c",
                               str(args.concurrency), "--requests", str(args.requests), "--warmup", "200", "--quiet",
                               "-rl", str(report)], env={**os.environ, "PYTHONPATH": _path_first(ROOT)}, capture_output=True,
                              text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"bench failed: {done.stderr[-2000:]}")
        throughput = json.loads((report / "summary.json").read_text())["levels"][0]["throughput"]
        return cold, throughput, answer
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
        figures: dict[str, dict[str, list[float]]] = {name: {"cold": [], "throughput": []} for name in trees}
        expected = None
        try:
            for round_index in range(args.rounds):
                order = list(trees) if round_index % 2 == 0 else list(trees)[::-1]
                for name in order:
                    cold, throughput, expected = serve_and_measure(trees[name], archive, sample, expected, args,
                                                                   scratch)
                    figures[name]["cold"].append(cold)
                    figures[name]["throughput"].append(throughput)
                    print(f"round {round_index + 1}/{args.rounds} {name}: cold start {cold:.2f} s, "
                          f"{throughput:,.0f} req/s", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
    old, new = figures[f"before ({before})"], figures["now"]
    median = {name: {key: statistics.median(values) for key, values in figure.items()} for name, figure in
              figures.items()}
    rows = [[name, f"{values['cold']:.2f}", f"{values['throughput']:,.0f}",
             " ".join(f"{v:.2f}" for v in figures[name]["cold"]),
             " ".join(f"{v:,.0f}" for v in figures[name]["throughput"])] for name, values in median.items()]
    table = markdown_table(["tree", "cold start s (median)", "tiny req/s (median)", "cold starts", "throughputs"], rows)
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
