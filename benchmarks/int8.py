"""Static int8 against bf16, in process, and served (issue 15's figures).

    python benchmarks/int8.py [--seconds 4] [--rounds 3] [--skip-served]

1. In process, batch 8, the same model as bf16 (channels-last, traced under autocast, frozen) and
   as static int8 (calibrated on inputs never measured, traced and frozen), throughput in
   interleaved rounds; accuracy against fp32 on held-out inputs:
   - resnet18 (random weights): top-1 agreement on 1,000 inputs; target int8 ≥ 1.5× bf16, ≥ 99 %;
   - minilm (real weights, real sentences): least cosine; target int8 ≥ 1.3× bf16 at ≥ 0.99, or a
     refusal stated plainly;
   - mnist (real digits): label accuracy on the 1,000 held-out digits; target a drop ≤ 0.5 points.
2. Served resnet18: the int8 archive `launchkit optimize` writes against the fp32 archive served by
   TorchServe 0.12 (live, same JPEG, `ab -k -c 8`, batch 8 / 5 ms); target ≥ 5× (what bf16 reaches);
   cold start of the int8 worker (server start to first answer) twice: the first, and again
   (TorchScript needs no compile cache).

Writes results/<ts>-int8/.
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
sys.path.insert(0, str(Path(__file__).parent.parent))
from _report import Check, absolute, markdown_table, relative, results_dir, write  # noqa: E402



def model_case(name: str, calibration_samples: int = 256):  # noqa: ANN201
    """(fp32 model maker, bf16 spec, inputs maker, calibration batches, accuracy kind, labelled set)."""
    import torch

    if name == "resnet18":
        from launchkit.examples.resnet import resnet18

        def load():  # noqa: ANN202
            torch.manual_seed(0)
            return resnet18().eval()

        make = lambda count, seed: (torch.randn(count, 3, 224, 224, generator=torch.Generator().manual_seed(seed)),)  # noqa: E731
        return load, "bf16,channels_last,torchscript", make, make(calibration_samples, 11), "top1", None
    if name == "minilm":
        from launchkit.examples.minilm import SENTENCES, MiniLM, encode, load_state_dict, tokenizer, weights_folder

        def load():  # noqa: ANN202
            model = MiniLM()
            model.load_state_dict(load_state_dict())
            return model.eval()

        tok = tokenizer(weights_folder() / "tokenizer.json")
        half = len(SENTENCES) // 2

        def make(count, seed):  # noqa: ANN001, ANN202
            import random

            chooser = random.Random(seed)
            pool = SENTENCES[half:]  # held out: never calibrated on
            return encode(tok, [" ".join(chooser.sample(pool, chooser.randint(1, 2))) for _ in range(count)])

        calibration = encode(tok, [SENTENCES[i % half] for i in range(min(calibration_samples, 64))])
        return load, "bf16,torchscript", make, calibration, "cosine", None
    from launchkit.examples.mnist import digit_net, load_digits, split

    digits = load_digits()
    train, _ = split(*digits, held_out=False)
    test, labels = split(*digits, held_out=True)
    make = lambda count, seed: (test.repeat(-(-count // len(test)), 1, 1, 1)[:count],)  # noqa: E731
    return digit_net, "bf16,torchscript", make, (train[:calibration_samples],), "labels", (test, labels)


def in_process(name: str, seconds: float, rounds: int, mode: str = "static") -> dict:
    import torch

    from launchkit.model.spec import parse_spec
    from launchkit.model.transform import optimize_model
    from launchkit.optimize.measure import agreement, compare_throughput, label_accuracy

    load, bf16_spec, make, calibration, kind, labelled = model_case(name)
    batch = 8
    bf16 = optimize_model(load(), parse_spec(bf16_spec), lambda: make(batch, 1))
    int8_spec = parse_spec(f"int8,torchscript,int8={mode}" + (",channels_last" if name == "resnet18" else ""))
    chunks = lambda: [tuple(t[i:i + batch] for t in calibration) for i in range(0, calibration[0].shape[0], batch)]  # noqa: E731
    int8 = optimize_model(load(), int8_spec, lambda: make(batch, 1), chunks)
    fp32 = optimize_model(load(), parse_spec("fp32"))
    comparison = compare_throughput(bf16, int8, make(batch, 2), seconds, rounds)
    measured = agreement(fp32, int8, make(1000 if kind != "cosine" else 256, 3), batch)
    result = {"bf16/s": statistics.median(comparison.original), "int8/s": statistics.median(comparison.optimized),
              "speedup": comparison.speedup, "top1": measured.top1_agreement, "min_cosine": measured.min_cosine,
              "int8_path": int8.description, "threads": torch.get_num_threads()}
    if labelled is not None:
        result["labels"] = label_accuracy(fp32, int8, (labelled[0],), labelled[1], batch)
    return result


def served(seconds: float) -> dict:
    """resnet18 int8 served by launchkit and fp32 served by TorchServe, the same JPEG under ``ab -k -c 8``."""
    import urllib.request
    from zipfile import ZipFile

    from peers import PeerUnavailable, TorchServe, ab
    from serve_anchors import Served

    work = Path(tempfile.mkdtemp(prefix="lk-int8-"))
    subprocess.run([sys.executable, "-m", "launchkit.examples.build", "--export-path", str(work), "resnet18"],
                   check=True, capture_output=True)
    int8 = work / "resnet18-int8.mar"
    # what is served is what the accuracy gate accepted (no --force): a refused artifact is reported, not served
    gate = subprocess.run([sys.executable, "-m", "launchkit", "optimize", str(work / "resnet18.mar"), "--dtype", "int8",
                           "--seconds", "2", "--batch-sizes", "8", "--samples", "256", "-o", str(int8)],
                          capture_output=True, text=True)
    if gate.returncode != 0 or not int8.exists():
        return {"refused": f"launchkit optimize refused the int8 artifact (exit {gate.returncode}): "
                           f"{(gate.stdout + gate.stderr).strip()[-300:]}"}
    sample = work / "sample.jpg"
    sample.write_bytes(ZipFile(work / "resnet18.mar").read("sample.jpg"))
    results: dict = {"cold_start_s": []}
    for attempt in range(2):
        started = time.perf_counter()
        with Served(int8, "--batch-size", "8", "--max-batch-delay", "5") as server:
            url = f"{server.url}/predictions/resnet18"
            request = urllib.request.Request(url, data=sample.read_bytes(), method="POST")
            with urllib.request.urlopen(request, timeout=60) as response:
                assert response.status == 200
            results["cold_start_s"].append(time.perf_counter() - started)
            if attempt == 0:
                ab(url, sample, CONCURRENCY, 100, content_type="image/jpeg")  # warm-up
                results["launchkit int8"] = ab(url, sample, CONCURRENCY, seconds=seconds, content_type="image/jpeg")
    try:
        with TorchServe([work / "resnet18.mar"], batch_size=8, max_batch_delay_ms=5) as server:
            url = server.predictions("resnet18")
            ab(url, sample, CONCURRENCY, 100, content_type="image/jpeg")
            results["TorchServe fp32"] = ab(url, sample, CONCURRENCY, seconds=seconds, content_type="image/jpeg")
    except PeerUnavailable as error:
        results["peer_unavailable"] = str(error)
    return results


CONCURRENCY = 8


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="resnet18,minilm,mnist")
    parser.add_argument("--skip-served", action="store_true")
    args = parser.parse_args()
    rows, data, checks = [], {}, []
    for name in args.models.split(","):
        figure = in_process(name, args.seconds, args.rounds)
        if name == "minilm":  # the best int8 recipe is what counts: dynamic is measured too
            dynamic = in_process(name, args.seconds, args.rounds, "dynamic")
            data["minilm (dynamic int8)"] = dynamic
            rows.append(["minilm, int8=dynamic", f"{dynamic['bf16/s']:.1f}", f"{dynamic['int8/s']:.1f}",
                         f"{dynamic['speedup']:.2f}", f"least cosine {dynamic['min_cosine']:.4f}", dynamic["int8_path"]])
            rows.append(["minilm, int8=static", f"{figure['bf16/s']:.1f}", f"{figure['int8/s']:.1f}",
                         f"{figure['speedup']:.2f}", f"least cosine {figure['min_cosine']:.4f}", figure["int8_path"]])
            data["minilm (static int8)"] = figure
            figure = max(figure, dynamic, key=lambda run: run["min_cosine"])  # the verdict is the better recipe's
            data[name] = figure
            print(f"{name}: bf16 {figure['bf16/s']:.1f}/s, int8 {figure['int8/s']:.1f}/s (best of static and "
                  f"dynamic), least cosine {figure['min_cosine']:.4f}", file=sys.stderr)
        else:
            data[name] = figure
            accuracy = (f"top-1 {figure['top1']:.2%}" if name == "resnet18" else f"labels {figure['labels']['original']:.2%}"
                        f" → {figure['labels']['optimized']:.2%}")
            rows.append([name, f"{figure['bf16/s']:.1f}", f"{figure['int8/s']:.1f}", f"{figure['speedup']:.2f}", accuracy,
                         figure["int8_path"]])
            print(f"{name}: bf16 {figure['bf16/s']:.1f}/s, int8 {figure['int8/s']:.1f}/s, {accuracy}", file=sys.stderr)
        scenario = f"{name} batch 8, in process"
        if name == "resnet18":
            checks += [relative(scenario, "int8 img/s", figure["int8/s"], figure["bf16/s"], 1.5, higher=True,
                                peer_name="bf16"),
                       absolute(scenario, "top-1 agreement", figure["top1"] * 100, 99, " %", higher=True)]
        elif name == "minilm":
            checks += [relative(scenario, "int8 sentences/s", figure["int8/s"], figure["bf16/s"], 1.3, higher=True,
                                peer_name="bf16"),
                       absolute(scenario, "least cosine (the best int8 recipe)", figure["min_cosine"], 0.99, "",
                                higher=True, note="below it, launchkit optimize refuses (exit 4)")]
        else:
            checks.append(absolute(scenario, "label accuracy drop", figure["labels"]["drop_points"], 0.5, " points",
                                   higher=False))
    table = markdown_table(["model", "bf16 /s", "int8 /s", "int8 ÷ bf16", "accuracy vs fp32", "int8 path"], rows)
    if not args.skip_served:
        figure = served(args.seconds * 2)
        data["served"] = figure
    if not args.skip_served and "refused" in figure:
        table += f"\n\nNot served: {figure['refused']}"
        checks.append(Check(f"served resnet18, JPEG, batch 8 / 5 ms, ab -k -c {CONCURRENCY}", "req/s", 0.0,
                            "≥ 5× TorchServe 0.12 fp32 (live)", False, note="the int8 artifact was refused"))
    elif not args.skip_served:
        ours, peer = figure["launchkit int8"], figure.get("TorchServe fp32")
        errors = ours["errors"] + (peer["errors"] if peer else 0)
        checks.append(relative(f"served resnet18, JPEG, batch 8 / 5 ms, ab -k -c {CONCURRENCY}", "req/s",
                               ours["req/s"], peer["req/s"] if peer else None, 5, higher=True, errors=errors,
                               peer_name="TorchServe 0.12 fp32 (live)",
                               note="target: bf16's 5x; the issue's recorded TorchServe figure was 41-45 req/s"))
        served_rows = [[name, f"{run['req/s']:.1f}", f"{run['p50 ms']:.0f}", f"{run['p99 ms']:.0f}", run["errors"]]
                       for name, run in figure.items() if isinstance(run, dict)]
        table += "\n\n" + markdown_table(["served resnet18, JPEG, c=8", "req/s", "p50 ms", "p99 ms", "errors"],
                                         served_rows)
        table += ("\n\nCold start of the int8 worker (server start to first answer): "
                  + ", ".join(f"{s:.2f} s" for s in figure["cold_start_s"]) + " (first, again; TorchScript: no compile)")
    return write(results_dir("int8"), "Static int8 vs bf16", table, data, checks)


if __name__ == "__main__":
    sys.exit(main())
