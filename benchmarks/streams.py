"""Streams against processes: what one copy of the weights on K pinned threads buys (issue 13's figures).

    python benchmarks/streams.py [--seconds 6] [--batch 16] [--skip-served]

On the cores this process may use (N of them), in one run:

1. In process, resnet18 (the bundled example's network, traced and frozen; fp32 and bf16), batch
   16: ``MultiStreamModule`` with N, N/2 and N/4 streams; the plain model on N threads; and N and
   N/4 pinned processes each running its share of the batch (each loads its own copy). Each
   configuration runs in a fresh process for ``--seconds``; images/s and resident memory (the
   processes' total for the process configurations). Targets: the best stream count ≥ 0.95× the
   best pinned processes, ≥ 1.5× the plain N-thread model, RSS ≤ 0.3× the processes' total.
2. Served resnet18 (the bundled archive, the sample JPEG, closed loop at 4 requests per core of
   concurrency, batch 4): 1 worker × S streams against S workers × 1 stream on the same cores
   (S = N/4, at least 2): throughput ≥ 0.95×, the workers' total RSS ≤ 0.4×.

Writes results/<ts>-streams/.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from _report import Check, markdown_table, relative, results_dir, write  # noqa: E402

SHAPE = (3, 224, 224)


def build_model(dtype: str):  # noqa: ANN201
    import torch

    from launchkit.examples.resnet import resnet18

    torch.manual_seed(0)
    model = resnet18().eval()
    example = torch.rand(1, *SHAPE)
    with torch.no_grad():
        if dtype == "bf16":
            # check_trace=False: the trace's own re-run check compares bf16 results with fp32 tolerances
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return torch.jit.freeze(torch.jit.trace(model, example, check_trace=False))
        return torch.jit.freeze(torch.jit.trace(model, example))


def rss_bytes(pid: int | None = None) -> int:
    import psutil

    return psutil.Process(pid or os.getpid()).memory_info().rss


def timed_loop(step, seconds: float, images_per_step: int) -> float:  # noqa: ANN001
    for _ in range(2):
        step()  # warm-up: graph optimisation and first-touch allocation
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        done += images_per_step
    return done / (time.perf_counter() - started)


def run_in_process(mode: str, count: int, dtype: str, batch: int, seconds: float, cpus: list[int]) -> dict:
    """``plain`` (count threads) or ``streams`` (count streams), in this process."""
    import torch

    from launchkit.runtime import CPUPool, MultiStreamModule

    x = torch.rand(batch, *SHAPE)
    if mode == "plain":
        torch.set_num_threads(len(cpus))
        model = build_model(dtype)
        step = lambda: model(x)  # noqa: E731
    else:
        model = build_model(dtype)
        streams = MultiStreamModule(model, num_streams=count, cpu_pool=CPUPool(cpus))
        step = lambda: streams(x)  # noqa: E731
    with torch.no_grad():
        rate = timed_loop(step, seconds, batch)
    return {"img/s": rate, "rss MiB": rss_bytes() / 2**20}


def _process_share(cpus: list[int], dtype: str, batch: int, seconds: float, start, results) -> None:  # noqa: ANN001
    import torch

    os.sched_setaffinity(0, set(cpus))
    torch.set_num_threads(len(cpus))
    model = build_model(dtype)
    x = torch.rand(batch, *SHAPE)
    with torch.no_grad():
        model(x)
        start.wait()
        rate = timed_loop(lambda: model(x), seconds, batch)
    results.put((rate, rss_bytes()))


def run_processes(count: int, dtype: str, batch: int, seconds: float, cpus: list[int]) -> dict:
    """``count`` pinned processes, each on its share of the cores, running its share of the batch."""
    context = multiprocessing.get_context("spawn")
    size, extra = divmod(len(cpus), count)
    shares, begin = [], 0
    for index in range(count):
        end = begin + size + (1 if index < extra else 0)
        shares.append(cpus[begin:end])
        begin = end
    per_batch = max(1, batch // count)
    start, results = context.Barrier(count), context.Queue()
    processes = [context.Process(target=_process_share, args=(share, dtype, per_batch, seconds, start, results))
                 for share in shares]
    for process in processes:
        process.start()
    answers = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
    return {"img/s": sum(rate for rate, _ in answers), "rss MiB": sum(rss for _, rss in answers) / 2**20}


def child(args: argparse.Namespace) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if args.mode == "processes":
        result = run_processes(args.count, args.dtype, args.batch, args.seconds, cpus)
    else:
        result = run_in_process(args.mode, args.count, args.dtype, args.batch, args.seconds, cpus)
    print(json.dumps(result))


def measure(mode: str, count: int, dtype: str, batch: int, seconds: float) -> dict:
    # the OpenMP runtime's default waiting (a brief spin, then sleep) for every configuration: with
    # OMP_WAIT_POLICY=ACTIVE, idle teams spin for good and steal the cores of the teams at work
    env = dict(os.environ)
    for key in ("OMP_WAIT_POLICY", "OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY", "KMP_AFFINITY"):
        env.pop(key, None)  # each configuration binds its own threads
    output = subprocess.run([sys.executable, __file__, "--child", mode, "--count", str(count), "--dtype", dtype,
                             "--batch", str(batch), "--seconds", str(seconds)], capture_output=True, text=True,
                            env=env, timeout=900)
    if output.returncode != 0:
        raise SystemExit(f"{mode} ×{count} {dtype} failed:\n{output.stderr[-3000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def served(streams: int, seconds: float) -> dict:
    """resnet18 served as 1 worker × ``streams`` streams, and as ``streams`` workers × 1, same cores."""
    import uvloop

    from launchkit.bench.loadgen import LoadSpec, Payload, Target, encode_requests, run_level
    from launchkit.bench.server import ServerUnderTest
    from launchkit.bench.stats import summarize

    work = Path(tempfile.mkdtemp(prefix="lk-streams-"))
    subprocess.run([sys.executable, "-m", "launchkit.examples.build", "--export-path", str(work), "resnet18"],
                   check=True, capture_output=True)
    from zipfile import ZipFile

    sample = ZipFile(work / "resnet18.mar").read("sample.jpg")
    concurrency = 4 * len(os.sched_getaffinity(0))
    results = {}
    for name, args in ((f"1 worker × {streams} streams", ["--workers", "1", "--streams", str(streams)]),
                       (f"{streams} workers × 1 stream", ["--workers", str(streams)])):
        log = Path(tempfile.mkstemp(prefix="lk-streams-serve-", suffix=".log")[1])
        with ServerUnderTest(work / "resnet18.mar", [*args, "--batch-size", "4", "--max-batch-delay", "5"], log) as server:
            target = Target.from_url(f"{server.url}/predictions/resnet18")
            encoded = encode_requests(target, [Payload(sample, "image/jpeg")])
            uvloop.run(run_level(target, encoded, LoadSpec(concurrency=concurrency, duration_s=3)))  # warm-up
            samples = uvloop.run(run_level(target, encoded, LoadSpec(concurrency=concurrency, duration_s=seconds)))
            summary = summarize(samples, concurrency, None)
            import psutil

            workers = [child for child in psutil.Process(server.proc.pid).children(recursive=True)
                       if "launchkit.serve.worker" in " ".join(child.cmdline())]
            rss = sum(child.memory_info().rss for child in workers) / 2**20
            results[name] = {"req/s": summary.throughput, "p50 ms": summary.latency_ms["p50"],
                             "errors": summary.requests_failed, "workers": len(workers), "workers' RSS MiB": rss}
        print(f"served {name}: {results[name]['req/s']:.1f} req/s", file=sys.stderr)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--skip-served", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.mode = args.child
        child(args)
        return 0
    cores = len(os.sched_getaffinity(0))
    stream_counts = sorted({max(1, cores // d) for d in (1, 2, 4)}, reverse=True)
    process_counts = sorted({cores, max(1, cores // 4)}, reverse=True)
    checks: list[Check] = []
    rows, data = [], {}
    for dtype in args.dtypes.split(","):
        figures = {}
        figures[f"plain, {cores} threads"] = measure("plain", cores, dtype, args.batch, args.seconds)
        for count in stream_counts:
            figures[f"{count} streams"] = measure("streams", count, dtype, args.batch, args.seconds)
        for count in process_counts:
            figures[f"{count} pinned processes"] = measure("processes", count, dtype, args.batch, args.seconds)
        for name, figure in figures.items():
            rows.append([dtype, name, f"{figure['img/s']:.1f}", f"{figure['rss MiB']:.0f}"])
            print(f"{dtype} {name}: {figure['img/s']:.1f} img/s, {figure['rss MiB']:.0f} MiB", file=sys.stderr)
        data[dtype] = figures
        best_streams = max((v for k, v in figures.items() if "streams" in k), key=lambda v: v["img/s"])
        best_processes = max((v for k, v in figures.items() if "processes" in k), key=lambda v: v["img/s"])
        scenario = f"resnet18 {dtype} batch {args.batch}, {cores} cores, in process"
        checks += [
            relative(scenario, "best streams img/s", best_streams["img/s"], best_processes["img/s"], 0.95, higher=True,
                     peer_name="best pinned processes"),
            relative(scenario, "best streams img/s", best_streams["img/s"], figures[f"plain, {cores} threads"]["img/s"],
                     1.5, higher=True, peer_name=f"plain {cores} threads"),
            relative(scenario, "RSS MiB", best_streams["rss MiB"], best_processes["rss MiB"], 0.3, higher=False,
                     peer_name="the processes' total"),
        ]
    table = markdown_table(["dtype", "configuration", "img/s", "RSS MiB (total)"], rows)
    if not args.skip_served:
        streams = max(2, cores // 4)
        figures = served(streams, args.seconds * 2)
        data["served"] = figures
        ours, theirs = figures[f"1 worker × {streams} streams"], figures[f"{streams} workers × 1 stream"]
        errors = ours["errors"] + theirs["errors"]
        scenario = f"served resnet18 (JPEG, batch 4), {cores} cores"
        checks += [relative(scenario, "req/s", ours["req/s"], theirs["req/s"], 0.95, higher=True, errors=errors,
                            peer_name=f"{streams} workers"),
                   relative(scenario, "workers' RSS MiB", ours["workers' RSS MiB"], theirs["workers' RSS MiB"], 0.4,
                            higher=False, errors=errors, peer_name=f"{streams} workers")]
        memory = "workers' RSS MiB"
        table += "\n\n" + markdown_table(["served", "req/s", "p50 ms", "workers", memory],
                                         [[name, f"{f['req/s']:.1f}", f"{f['p50 ms']:.1f}", f["workers"],
                                           f"{f[memory]:.0f}"] for name, f in figures.items()])
    return write(results_dir("streams"), f"Streams vs processes ({cores} cores)", table, data, checks)


if __name__ == "__main__":
    sys.exit(main())
