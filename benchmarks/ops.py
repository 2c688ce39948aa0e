"""What the operations features cost and do under load (issue 4's figures).

    python benchmarks/ops.py [--requests 20000] [--pairs 4] [--scale 1,2,1]

1. Metrics on the hot path: tiny, batch 1, `ab -k -c 8`, a server with metrics on (launchkit's
   and TorchServe's names) and one with `enable_metrics_api=false` (no accounting at all),
   interleaved pairs (alternating which goes first); ratio of the medians. Also the accounting's
   own CPU per request, timed in-process, and what one scrape of /metrics costs.
2. Scaling under load: tiny under `ab -k -c 8` for the whole run while the management API scales
   it through --scale (synchronous PUTs); how long each step took and how many requests failed.

Writes results/<ts>-ops/.
"""

from __future__ import annotations

import argparse
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import Check, markdown_table, relative, results_dir, write  # noqa: E402
from peers import ab  # noqa: E402
from serve_anchors import PY, Served  # noqa: E402


def scale(server, workers: int) -> float:
    started = time.perf_counter()
    request = urllib.request.Request(f"{server.management_url}/models/tiny?min_worker={workers}&synchronous=true",
                                     method="PUT")
    with urllib.request.urlopen(request, timeout=300) as response:
        assert response.status == 200, response.read()
    return time.perf_counter() - started


def accounting_us(count: int = 200_000) -> float:
    """What the server's metrics calls for one batch-1 request cost, timed alone."""
    import timeit

    from launchkit.serve.scheduling.model_metrics import ModelMetrics

    metrics = ModelMetrics("tiny", "1.0")
    timings = {"handle": 1e-4, "preprocess": 2e-5, "inference": 5e-5, "postprocess": 1e-5}

    def one_request() -> None:
        started = time.perf_counter()
        metrics.batch_sent([time.monotonic() - started])
        metrics.batch_done(timings)
        metrics.request_done(200, time.perf_counter() - started)

    return timeit.timeit(one_request, number=count) / count * 1e6


def scrape_ms(count: int = 200) -> float:
    """One /metrics text rendering for a server holding two models with traffic, timed alone."""
    import timeit
    from dataclasses import dataclass, field

    from prometheus_client import generate_latest

    from launchkit.serve.api.metrics import ServerMetrics

    @dataclass
    class Model:  # what the collectors read of a served model
        name: str
        version: str = "1.0"
        metrics: object = None
        workers: list = field(default_factory=list)
        ready: bool = True
        queue: object = field(default_factory=lambda: type("Q", (), {"queue": []})())

    class Models:
        def __init__(self, models: list[Model]) -> None:
            self.models = models

        def all(self) -> list[Model]:
            return self.models

    models = [Model("tiny"), Model("resnet18")]
    server = ServerMetrics(Models(models))  # type: ignore[arg-type]
    for model in models:
        model.metrics = server.for_model(model)  # type: ignore[arg-type]
        for _ in range(5000):
            model.metrics.batch_sent([0.0002])
            model.metrics.batch_done({"handle": 1e-4}, 1, [("HandlerTime", "ms", "gauge", ("ModelName", "Level"),
                                                            (model.name, "Model"), 0.1)])
            model.metrics.request_done(200, 0.0005)
    return timeit.timeit(lambda: generate_latest(server.registry), number=count) / count * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--scale", default="1,2,1", help="worker counts to step through under load")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lk-ops-"))
    subprocess.run([PY, "-m", "launchkit.examples.build", "--export-path", str(work), "tiny"], check=True,
                   capture_output=True)
    tiny = work / "tiny.mar"
    body = work / "tiny.bin"
    body.write_bytes(struct.pack("64f", *[i / 64 for i in range(64)]))
    off = work / "off.properties"
    off.write_text("enable_metrics_api=false\n")

    runs: dict[str, list[dict[str, float]]] = {"metrics on": [], "metrics off": []}
    variants = [("metrics on", []), ("metrics off", ["--ts-config", str(off)])]
    for pair in range(args.pairs):
        for label, extra in variants if pair % 2 == 0 else variants[::-1]:  # alternate who goes first
            with Served(tiny, *extra) as server:
                ab(f"{server.url}/predictions/tiny", body, 8, 2000)
                runs[label].append(ab(f"{server.url}/predictions/tiny", body, 8, args.requests))
    medians = {label: {key: statistics.median(run[key] for run in values) for key in ("req/s", "p50 ms", "p99 ms")}
               for label, values in runs.items()}
    rows = [[label, f"{m['req/s']:.0f}", f"{m['p50 ms']:.2f}", f"{m['p99 ms']:.2f}",
             ", ".join(f"{run['req/s']:.0f}" for run in runs[label])] for label, m in medians.items()]
    ratio = medians["metrics on"]["req/s"] / medians["metrics off"]["req/s"]
    rows.append(["on ÷ off", f"{ratio:.3f}", "", "", ""])
    rows.append(["accounting CPU per batch-1 request, in-process", f"{accounting_us():.2f} µs", "", "", ""])
    rows.append(["one scrape of /metrics (TorchServe's names included), in-process", f"{scrape_ms():.2f} ms", "", "",
                 ""])
    table = markdown_table(["tiny b1 c8 (ab -k)", "req/s (median)", "p50 ms", "p99 ms", "runs"], rows)

    steps = [int(count) for count in args.scale.split(",")]
    load: dict[str, float] = {}
    timings = []
    with Served(tiny, "--workers", str(steps[0])) as server:
        thread = threading.Thread(target=lambda: load.update(ab(f"{server.url}/predictions/tiny", body, 8,
                                                                seconds=4 + 6 * len(steps))))
        thread.start()
        time.sleep(2)
        for count in steps[1:]:
            timings.append((count, scale(server, count)))
            time.sleep(3)
        thread.join()
    scale_rows = [[f"→ {count} worker(s)", f"{seconds:.2f}"] for count, seconds in timings]
    scale_rows.append(["requests during the run (ab -k -c 8)", f"{load['requests']:.0f}"])
    scale_rows.append(["non-2xx or failed requests", f"{load['errors']:.0f}"])
    table += "\n\n" + markdown_table(["scale step (synchronous PUT, under load)", "seconds / count"], scale_rows)
    checks = [
        relative("tiny b1 c8, metrics on", "req/s", medians["metrics on"]["req/s"], medians["metrics off"]["req/s"],
                 0.99, higher=True, peer_name="metrics off",
                 errors=sum(run["errors"] for values in runs.values() for run in values)),
        Check("scaling under load", "requests lost", float(load["errors"]), "0 non-2xx or failed", load["errors"] == 0,
              note=f"{load['requests']:.0f} requests, steps {args.scale}"),
    ]
    return write(results_dir("ops"), "launchkit serve: metrics cost and scaling under load", table,
                 {"metrics": runs, "medians": medians, "metrics_ratio": ratio, "scale": timings, "load": load}, checks)


if __name__ == "__main__":
    sys.exit(main())
