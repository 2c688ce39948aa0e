"""What the drop-in protocols cost: perf_analyzer's own figures over KServe v2 binary against
``/predictions``, and the KServe v1 path's overhead (issue 11's figures).

    python benchmarks/drop_in.py [--levels 1,2,4,8] [--window-ms 3000] [--requests 10000] [--rounds 3]

1. perf_analyzer (tritonclient 2.51.0's binary, from .venv-clients: bash scripts/setup.sh --tests)
   against one `launchkit serve` of the bundled tiny example (batch 1): at each concurrency, its
   default mode (v2, binary tensors) and ``--service-kind torchserve`` (``/predictions``, the body
   uploaded as a file), interleaved; its throughput and p50/p99 as it reports them. Target: v2
   within 10 % of /predictions' throughput (ratio ≥ 0.90) at every level.
2. The v1 path's overhead: launchkit's load generator at c=8 posting the same 64 numbers as JSON
   to ``/predictions``, to ``/v1/models/tiny:predict`` (``{"instances": [row]}``) and to v2
   ``infer`` (JSON), in interleaved rounds; the medians' throughput ratios and p50 differences.
3. What splitting perf_analyzer's TorchServe-mode upload costs in the worker (timed in-process):
   launchkit's boundary splitter (``codec.form_fields``) against the standard library's email parser,
   which the worker used before and which other multipart handling often reaches for.

perf_analyzer comes from .venv-clients, or from ``$PERF_ANALYZER`` (its libraries, libb64.so.0d and
libcudart.so.12, beside it): how the lent 16-core machine, which has no package registry, runs it.

Writes results/<ts>-drop-in/.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import Check, markdown_table, relative, results_dir, write  # noqa: E402
from serve_anchors import Served  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ROOT / ".venv-clients"


def perf_analyzer(url: str, concurrency: int, window_ms: int, work: Path, torchserve_input: Path | None,
                  protocol: str = "http") -> dict:
    """perf_analyzer's own figures at one concurrency: its default v2 binary mode (over ``protocol``,
    http or grpc), or ``--service-kind torchserve`` uploading ``torchserve_input``."""
    given = os.environ.get("PERF_ANALYZER")
    binary = Path(given) if given else CLIENTS / "bin" / "perf_analyzer"
    if not binary.exists():
        raise SystemExit("perf_analyzer is missing: run bash scripts/setup.sh --tests (it installs .venv-clients)")
    cudart = binary.parent if given else next(CLIENTS.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
    report = work / f"pa-{concurrency}-{'ts' if torchserve_input else 'v2'}-{protocol}.csv"
    args = [str(binary), "-m", "tiny", "-u", url, "--concurrency-range", f"{concurrency}:{concurrency}",
            # -s 100: a noisy machine rarely gives three windows within perf_analyzer's default 10 %, and
            # an "unstable" run writes no figures at all; each figure is still its three last windows' average
            "-p", str(window_ms), "-s", "100", "-r", "10", "-f", str(report), "--percentile", "50"]
    if torchserve_input is not None:
        args += ["--service-kind", "torchserve", "-i", "http", "--input-data", str(torchserve_input)]
    else:
        args += ["-i", protocol]
    result = subprocess.run(args, capture_output=True, text=True, env={
        **os.environ, "LD_LIBRARY_PATH": f"{cudart}:{os.environ.get('LD_LIBRARY_PATH', '')}"})
    if result.returncode != 0 or not report.exists():
        return {"infer/s": 0.0, "p50 ms": float("nan"), "p99 ms": float("nan"), "errors": 1,
                "detail": (result.stderr or result.stdout)[-400:]}
    row = next(csv.DictReader(report.open()))
    return {"infer/s": float(row["Inferences/Second"]), "p50 ms": float(row["p50 latency"]) / 1000,
            "p99 ms": float(row["p99 latency"]) / 1000, "errors": 0}


def load(url: str, body: bytes, concurrency: int, requests: int) -> dict:
    """launchkit's closed-loop load generator: req/s, p50, errors."""
    import uvloop

    from launchkit.bench.loadgen import LoadSpec, run_level
    from launchkit.bench.requests import Payload, Target, encode_requests
    from launchkit.bench.stats import summarize

    target = Target.from_url(url)
    encoded = encode_requests(target, [Payload(body, "application/json")])
    samples = uvloop.run(run_level(target, encoded, LoadSpec(concurrency=concurrency, requests=requests)))
    result = summarize(samples, concurrency, None)
    return {"req/s": result.throughput, "p50 ms": result.latency_ms["p50"], "errors": result.requests_failed}


def form_split_us(body: bytes, content_type: str, count: int = 2000) -> dict[str, float]:
    """µs per upload: launchkit's splitter and the standard library's email parser, the same body."""
    import timeit
    from email.parser import BytesParser
    from email.policy import HTTP

    from launchkit.serve.worker.codec import form_fields

    def by_email() -> dict:
        message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                for part in message.iter_parts()}

    assert by_email() == form_fields(body, content_type), "the two parsers disagree on the upload"
    return {"launchkit": min(timeit.repeat(lambda: form_fields(body, content_type), number=count, repeat=5))
            / count * 1e6,
            "email.parser": min(timeit.repeat(by_email, number=count // 10, repeat=5)) / (count // 10) * 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,2,4,8")
    parser.add_argument("--window-ms", type=int, default=3000)
    parser.add_argument("--requests", type=int, default=10000, help="ab requests per v1-overhead run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    if len(os.sched_getaffinity(0)) > 2:  # a bigger machine: more to measure per window
        args.requests = max(args.requests, 30000)
    work = Path(tempfile.mkdtemp(prefix="lk-drop-in-"))
    subprocess.run([sys.executable, "-m", "launchkit.examples.build", "--export-path", str(work), "tiny"],
                   check=True, capture_output=True)
    row = [i / 64 for i in range(64)]
    raw = work / "tiny.bin"
    raw.write_bytes(struct.pack("<64f", *row))
    upload = work / "torchserve_input.json"
    upload.write_text(json.dumps({"data": [{"TORCHSERVE_INPUT": [str(raw)]}]}))
    bodies = {"/predictions": (work / "p.json", row, "/predictions/tiny"),
              "v1 :predict": (work / "v1.json", {"instances": [row]}, "/v1/models/tiny:predict"),
              "v2 infer (JSON)": (work / "v2.json", {"inputs": [{"name": "input0", "shape": [1, 64],
                                                                  "datatype": "FP32", "data": row}]},
                                  "/v2/models/tiny/infer")}
    for path, payload, _ in bodies.values():
        path.write_text(json.dumps(payload))

    levels_data: dict[int, dict[str, dict]] = {}
    overhead: dict[str, list[dict]] = {name: [] for name in bodies}
    with Served(work / "tiny.mar") as server:
        address = server.url.removeprefix("http://")
        for index, level in enumerate(levels):
            order = ["v2", "ts"] if index % 2 == 0 else ["ts", "v2"]
            levels_data[level] = {mode: perf_analyzer(address, level, args.window_ms, work,
                                                      upload if mode == "ts" else None) for mode in order}
            print(f"perf_analyzer c={level}: v2 {levels_data[level]['v2']['infer/s']:.0f}, /predictions "
                  f"{levels_data[level]['ts']['infer/s']:.0f} infer/s", file=sys.stderr)
        for round_index in range(args.rounds):
            names = list(bodies) if round_index % 2 == 0 else list(reversed(bodies))
            for name in names:
                body, _, path = bodies[name]
                overhead[name].append(load(server.url + path, body.read_bytes(), 8, args.requests))
            print(f"v1 overhead round {round_index + 1}/{args.rounds}", file=sys.stderr)

    checks: list[Check] = []
    rows = []
    for level, modes in levels_data.items():
        v2, ts = modes["v2"], modes["ts"]
        errors = v2["errors"] + ts["errors"]
        rows.append([level, f"{v2['infer/s']:.0f}", f"{ts['infer/s']:.0f}",
                     f"{v2['infer/s'] / ts['infer/s']:.2f}" if ts["infer/s"] else "-",
                     f"{v2['p50 ms']:.2f} / {v2['p99 ms']:.2f}", f"{ts['p50 ms']:.2f} / {ts['p99 ms']:.2f}"])
        checks.append(relative(f"tiny b1 c={level}, perf_analyzer", "v2 binary infer/s", v2["infer/s"], ts["infer/s"],
                               0.90, higher=True, errors=errors, peer_name="/predictions"))
    pa_table = markdown_table(["concurrency", "v2 binary infer/s", "/predictions infer/s", "v2 ÷ /predictions",
                               "v2 p50 / p99 ms", "/predictions p50 / p99 ms"], rows)
    medians = {name: {key: statistics.median(run[key] for run in runs) for key in ("req/s", "p50 ms")}
               for name, runs in overhead.items()}
    base = medians["/predictions"]
    overhead_rows = [[name, f"{m['req/s']:.0f}", f"{m['req/s'] / base['req/s']:.3f}", f"{m['p50 ms']:.2f}",
                      f"{(m['p50 ms'] - base['p50 ms']) * 1000:+.0f}"] for name, m in medians.items()]
    overhead_table = markdown_table(["route (c=8, the same 64 numbers as JSON)", "req/s", "÷ /predictions",
                                     "p50 ms", "p50 vs /predictions µs"], overhead_rows)
    errors = sum(run["errors"] for runs in overhead.values() for run in runs)
    if errors:  # the overhead has no bound to meet, but a load with errors makes the run a failure
        checks.append(Check("v1 overhead", "errors", errors, "0", False, errors=errors))
    # perf_analyzer's TorchServe mode uploads the file as one form field named "data" (as curl -F does)
    boundary = "----perfanalyzerboundary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"data\"; filename=\"tiny.bin\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + raw.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    split = form_split_us(form, f"multipart/form-data; boundary={boundary}")
    split_table = markdown_table(["parser", f"µs per upload ({len(form)} bytes, one field)"],
                                 [[name, f"{us:.1f}"] for name, us in split.items()])
    table = ("## perf_analyzer, its own figures\n\n" + pa_table + "\n\n## The v1 path's overhead\n\n" + overhead_table
             + "\n\n## Splitting perf_analyzer's upload in the worker\n\n" + split_table)
    return write(results_dir("drop-in"), "Drop-in protocols: perf_analyzer over v2 binary vs /predictions; v1's "
                 "overhead (tiny, batch 1)", table, {"perf_analyzer": levels_data, "overhead": overhead,
                                                     "medians": medians, "form split µs": split}, checks)


if __name__ == "__main__":
    sys.exit(main())
