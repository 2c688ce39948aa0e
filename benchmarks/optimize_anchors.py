"""Optimized serving against the figures of the optimization issue (issue 6).

    python benchmarks/optimize_anchors.py [--seconds 15] [--samples 1000] [--only resnet minilm int8]

1. resnet18: `launchkit optimize --example resnet18 --dtype bf16` (top-1 agreement with fp32 on
   --samples random inputs), then the archive served at batch 8 / 10 ms under `ab -k -c 8` with a
   raw float32 body: as written (eager fp32, what TorchServe runs), the example's lossless default
   (fp32, channels-last, TorchScript), and bf16 + channels-last + TorchScript, with 1 and 2
   workers; and the same .mar served by TorchServe 0.12 (live, same load, 1 and 2 workers: the
   better of the two is the denominator). Target: bf16 ≥ 5× TorchServe fp32, top-1 ≥ 99%.
2. minilm: served fp32 vs bf16 (batch 8, c=8, a sentence per request), and the cosine of bf16 to
   fp32 from `launchkit optimize --example minilm --dtype bf16 --graph none`. Target: ≥ 1.4×,
   cosine ≥ 0.999.
3. int8 (dynamic, Linear layers: `--int8 dynamic`) on tiny, resnet18 and minilm: speed-up, and
   whether `launchkit optimize` accepts exactly what is accurate. Accuracy is measured here, not
   read from optimize's own gate: the fp32 archive and the int8 artifact (written with --force
   where the gate refused it, for this measurement only) are served one after the other and
   answer the same inputs this script draws (random tensors; sentences from a seeded word list);
   top-1 agreement of their answers (tiny, resnet18) or the least cosine (minilm) decides.

Verdicts are computed from this run's numbers; a load with errors fails its scenario (exit 1).
Writes results/<ts>-optimize-anchors/.
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import Check, absolute, markdown_table, relative, results_dir, write  # noqa: E402
from peers import PeerUnavailable, TorchServe, ab  # noqa: E402
from serve_anchors import PY, Served  # noqa: E402


def optimize(work: Path, example: str, *args: str) -> dict:
    report = work / f"opt-{example}-{'-'.join(args)}".replace("/", "_")
    result = subprocess.run([PY, "-m", "launchkit", "optimize", "--example", example, *args, "--report-dir",
                             str(report)], capture_output=True, text=True)
    if result.returncode not in (0, 4, 5):  # written, refused as inaccurate, refused as slower
        raise SystemExit(f"launchkit optimize failed:\n{result.stderr[-2000:]}")
    return json.loads((report / "summary.json").read_text())


CONCURRENCY = 8


def served(archive: Path, body: Path, content_type: str, seconds: float, *args: str) -> dict:
    with Served(archive, "--batch-size", "8", "--max-batch-delay", "10", *args) as server:
        url = f"{server.url}/predictions/{archive.stem.split('-')[0]}"
        ab(url, body, CONCURRENCY, 200, content_type=content_type or "application/octet-stream")  # warm-up
        return ab(url, body, CONCURRENCY, seconds=seconds, content_type=content_type or "application/octet-stream")


def torchserve_served(archive: Path, body: Path, seconds: float, workers: int) -> dict:
    with TorchServe([archive], batch_size=8, max_batch_delay_ms=10, workers=workers) as server:
        url = server.predictions(archive.stem)
        ab(url, body, CONCURRENCY, 200)  # warm-up
        return ab(url, body, CONCURRENCY, seconds=seconds)


WORDS = ("the model serves requests on pinned cores while a batch of images waits for its turn in the queue "
         "and every answer carries the latency the client measured against the server").split()


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _cos(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _inputs(example: str, count: int) -> tuple[list[bytes], str]:
    """The bodies the agreement is measured on, drawn here (seeded), and their content type."""
    import random

    draw = random.Random(7)
    if example == "minilm":
        return [" ".join(draw.choice(WORDS) for _ in range(draw.randint(4, 16))).encode() for _ in range(count)], \
            "text/plain"
    size = 64 if example == "tiny" else 3 * 224 * 224
    return [struct.pack(f"{size}f", *(draw.uniform(-1, 1) for _ in range(size))) for _ in range(count)], \
        "application/octet-stream"


def served_agreement(fp32: Path, int8: Path, example: str, count: int) -> dict:
    """Serve each archive in turn, send both the same inputs, compare their answers (top-1 and cosine)."""
    import math
    import urllib.request

    bodies, content_type = _inputs(example, count)
    answers: dict[str, list] = {}
    for name, archive in (("fp32", fp32), ("int8", int8)):
        with Served(archive, "--batch-size", "1") as server:
            url = f"{server.url}/predictions/{server.model}"
            answers[name] = []
            for body in bodies:
                request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
                with urllib.request.urlopen(request, timeout=120) as response:
                    answers[name].append(json.loads(response.read()))

    def vector(answer: object) -> list[float]:
        if isinstance(answer, dict):  # resnet18's top-5 {class: probability}
            return list(answer.values())
        return [float(x) for x in answer]  # type: ignore[union-attr]

    def top1(answer: object) -> object:
        if isinstance(answer, dict):
            return max(answer, key=answer.get)  # type: ignore[arg-type]
        values = vector(answer)
        return values.index(max(values))

    def cosine(a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b))
        return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)) or 1.0)

    pairs = list(zip(answers["fp32"], answers["int8"]))
    cosines = [cosine(vector(a), vector(b)) for a, b in pairs if not isinstance(a, dict)]
    return {"samples": len(pairs),
            "top1": None if example == "minilm" else sum(top1(a) == top1(b) for a, b in pairs) / len(pairs),
            "min_cosine": min(cosines) if cosines else None}  # resnet18 answers its top 5 only: no vector


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--int8-samples", type=int, default=64, help="inputs each int8 artifact answers, served")
    parser.add_argument("--workers", type=int, default=2, help="workers of the multi-worker resnet rows")
    parser.add_argument("--concurrency", type=int, default=8, help="ab -c (the issue's figures: 8)")
    args = parser.parse_args()
    global CONCURRENCY
    CONCURRENCY = args.concurrency
    wanted = lambda name: not args.only or name in args.only  # noqa: E731
    work = Path(tempfile.mkdtemp(prefix="lk-opt-bench-"))
    names = ["resnet18"] + (["minilm"] if wanted("minilm") or wanted("int8") else []) + (
        ["tiny"] if wanted("int8") else [])
    subprocess.run([PY, "-m", "launchkit.examples.build", "--export-path", str(work), *names],
                   check=True, capture_output=True)
    tables, data, checks = [], {}, []

    if wanted("resnet"):
        summary = optimize(work, "resnet18", "--dtype", "bf16", "--samples", str(args.samples), "--batch-sizes", "8",
                           "-o", str(work / "resnet18-bf16.mar"))
        body = work / "resnet.bin"
        body.write_bytes(struct.pack(f"{3 * 224 * 224}f", *([0.5] * (3 * 224 * 224))))
        # Two workers of one core each: what TorchServe runs here by default (a worker per logical
        # CPU), and what lets one batch compute while the next one's 600 KB bodies arrive.
        two = ("--workers", str(args.workers))
        runs = {
            f"eager fp32 (as written; what TorchServe runs), {args.workers} workers": served(
                work / "resnet18.mar", body, "", args.seconds, "--optimization", "fp32", *two),
            f"fp32 + channels-last + TorchScript (example default), {args.workers} workers": served(
                work / "resnet18.mar", body, "", args.seconds, *two),
            "bf16 + channels-last + TorchScript (launchkit optimize), 1 worker": served(
                work / "resnet18-bf16.mar", body, "", args.seconds),
            f"bf16 + channels-last + TorchScript (launchkit optimize), {args.workers} workers": served(
                work / "resnet18-bf16.mar", body, "", args.seconds, *two),
        }
        peers: dict[str, dict] = {}
        try:
            for workers in sorted({1, args.workers}):
                peers[f"TorchServe 0.12, eager fp32, {workers} worker(s)"] = torchserve_served(
                    work / "resnet18.mar", body, args.seconds, workers)
        except PeerUnavailable as error:
            data["peer_unavailable"] = str(error)
        best_peer = max((run["req/s"] for run in peers.values() if not run["errors"]), default=None)
        rows = [[name, f"{run['req/s']:.1f}", f"{run['p50 ms']:.1f}", f"{run['p99 ms']:.1f}",
                 f"{run['req/s'] / best_peer:.2f}×" if best_peer else "-", run["errors"]]
                for name, run in {**runs, **peers}.items()]
        agreement = summary["agreement"]
        best_name = max((name for name in runs if name.startswith("bf16")), key=lambda name: runs[name]["req/s"])
        errors = sum(run["errors"] for run in {**runs, **peers}.values())
        checks.append(relative("resnet18 bf16 served (better of 1 and N workers)", "req/s", runs[best_name]["req/s"],
                               best_peer, 5, higher=True, errors=errors, peer_name="TorchServe fp32 (better of its runs)",
                               note=best_name.split("), ")[-1]))
        checks.append(absolute("resnet18 bf16", "top-1 agreement with fp32", agreement["top1_agreement"], 0.99, "",
                               higher=True, note=f"{agreement['samples']} random inputs"))
        tables.append(markdown_table([f"resnet18 served, batch 8 / 10 ms, c={args.concurrency}", "req/s", "p50 ms", "p99 ms",
                                      "÷ TorchServe fp32 (live, best)", "errors"], rows)
                      + f"\n\nbf16 top-1 agreement with fp32 on {agreement['samples']} random inputs: "
                        f"{agreement['top1_agreement']:.2%} (cosine min {agreement['min_cosine']}); in-process "
                        f"batch 8: {summary['throughput'][0]['original']} → {summary['throughput'][0]['optimized']} "
                        f"img/s ({summary['throughput'][0]['speedup']}×, eager fp32 → bf16)")
        data["resnet"] = {"served": runs, "torchserve": peers, "optimize": summary}

    if wanted("minilm"):
        summary = optimize(work, "minilm", "--dtype", "bf16", "--graph", "none", "--samples", "256",
                           "--batch-sizes", "8", "-o", str(work / "minilm-bf16.mar"))
        body = work / "sentence.txt"
        body.write_text("A man is playing a guitar on stage while the crowd sings along.")
        runs = {dtype: served(work / "minilm.mar", body, "text/plain", args.seconds, "--optimization", dtype)
                for dtype in ("fp32", "bf16")}
        ratio = runs["bf16"]["req/s"] / runs["fp32"]["req/s"]
        rows = [[dtype, f"{run['req/s']:.1f}", f"{run['p50 ms']:.1f}", run["errors"]] for dtype, run in runs.items()]
        rows.append(["bf16 ÷ fp32", f"{ratio:.2f}×", "", ""])
        errors = sum(run["errors"] for run in runs.values())
        checks.append(relative("minilm served bf16", "req/s", runs["bf16"]["req/s"], runs["fp32"]["req/s"], 1.4,
                               higher=True, errors=errors, peer_name="launchkit fp32"))
        checks.append(absolute("minilm bf16", "least cosine to fp32", summary["agreement"]["min_cosine"], 0.999, "",
                               higher=True, note="256 sentence inputs"))
        tables.append(markdown_table(["minilm served, batch 8 / 10 ms, c=8", "req/s", "p50 ms", "errors"], rows)
                      + f"\n\nbf16 vs fp32 on 256 sentence inputs: cosine min {summary['agreement']['min_cosine']}, "
                        f"mean {summary['agreement']['mean_cosine']}")
        data["minilm"] = {"served": runs, "ratio": ratio, "optimize": summary}

    if wanted("int8"):
        rows = []
        for example, extra in (("tiny", []), ("resnet18", ["--samples", "256"]), ("minilm", ["--samples", "256"])):
            artifact = work / f"{example}-int8.mar"
            common = ("--dtype", "int8", "--int8", "dynamic", "--graph", "none", "--no-channels-last",
                      "--batch-sizes", "8", *extra)
            summary = optimize(work, example, *common, "-o", str(artifact))
            if not artifact.exists():  # refused: written for this measurement only
                artifact = work / f"{example}-int8-forced.mar"
                optimize(work, example, *common, "-o", str(artifact), "--force")
            measured = served_agreement(work / f"{example}.mar", artifact, example, args.int8_samples)
            rows.append([example, f"{summary['throughput'][0]['speedup']}×", _share(measured.get("top1")),
                         _cos(measured["min_cosine"]), "accepted" if summary["accepted"] else "refused"])
            data[f"int8-{example}"] = {"optimize": summary, "measured here": measured}
            accurate = (measured["top1"] >= 0.99 if example != "minilm" else measured["min_cosine"] >= 0.999)
            checks.append(Check(f"int8 {example}", "launchkit optimize", 1.0 if summary["accepted"] else 0.0,
                                "accepts exactly what is accurate (accuracy measured by this script)",
                                summary["accepted"] == accurate,
                                note=("accepted" if summary["accepted"] else "refused") + f"; measured here: "
                                     f"top-1 {_share(measured.get('top1'))}, least cosine {_cos(measured['min_cosine'])}"
                                     f" on {measured['samples']} inputs"))
        tables.append(markdown_table(["int8 (dynamic, Linear)", "speed-up at batch 8 (optimize's)",
                                      "top-1 agreement (served, measured here)", "least cosine (served, here)",
                                      "launchkit optimize"], rows))
    return write(results_dir("optimize-anchors"), "Optimized serving (issue 6 anchors; TorchServe live)",
                 "\n\n".join(tables), data, checks)


if __name__ == "__main__":
    sys.exit(main())
