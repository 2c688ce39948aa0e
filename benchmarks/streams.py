"""Streams at the mechanism's speed, and served at the in-process ceiling (issues 13 and 22).

    python benchmarks/streams.py [--part inprocess|served|all] [--dtypes fp32,bf16,int8]
                                 [--seconds 6] [--batch 16] [--allocator default|tcmalloc|jemalloc]
                                 [--tune-minutes 0]

Models are built as ``launchkit optimize`` builds them (the bundled resnet18 network, channels-last,
traced and frozen; bf16 traced under autocast; int8 static, calibrated on random images, which is
enough for speed and says nothing of accuracy). On the N cores this process may use, in one run:

``inprocess`` (batch 16, each configuration in a fresh process for ``--seconds``):
  * the bare mechanism: K Python threads, each pinned to its N/K cores with its own OpenMP team,
    each looping on its share of the batch, on one model object (K = N and N/4);
  * ``MultiStreamModule`` with K streams on the same model object, called synchronously and with
    two calls in flight (``submit``);
  * the plain model on N threads, and K pinned processes each with its own copy;
  Targets: streams (two in flight) ≥ 0.95× the bare mechanism, every dtype and K.
``served`` (the bundled archive; closed loop, 4 requests per core in flight):
  * the ceiling: K pinned threads of one process, and K pinned processes, each looping on the JPEG
    through the handler's own preprocessing (decode, resize, crop, normalise), the model and its
    postprocessing; the best of the four (K = N and N/4) is the ceiling (threads share one GIL,
    which holds them back where the model is cheap, as int8's is);
  * ``launchkit serve`` with several worker × stream × batch shapes, the sample JPEG and the 112 KB
    photo; the load generator runs on the same cores and its CPU share is reported beside;
  * ``--tune-minutes M``: ``launchkit optimize --dtype DTYPE`` on the archive, then ``launchkit tune``
    on its artifact for M minutes (the same allocator), and tune's best served beside the shapes.
  Target: the best served shape ≥ 0.9× the ceiling.

``--allocator`` preloads tcmalloc or jemalloc into every configuration, in process and in the served
workers (found as ``launchkit run`` finds them: ``LAUNCHKIT_LIBRARY_PATH`` first); ``default`` is the C
library's malloc everywhere (for the workers, ``--memory-allocator default``). Writes results/<ts>-streams/.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from _report import Check, markdown_table, relative, results_dir, write  # noqa: E402

SHAPE = (3, 224, 224)
PHOTO = Path(__file__).parent.parent / "tests" / "fixtures" / "payloads" / "rocket.jpg"


def build_model(dtype: str):  # noqa: ANN201
    """resnet18 as ``launchkit optimize --dtype DTYPE`` makes it: channels-last, traced, frozen."""
    import torch

    from launchkit.examples.resnet import resnet18
    from launchkit.model.spec import parse_spec
    from launchkit.model.transform import optimize_model

    torch.manual_seed(0)
    calibration = (lambda: [(torch.rand(4, *SHAPE),) for _ in range(4)]) if dtype == "int8" else None
    return optimize_model(resnet18().eval(), parse_spec(f"{dtype},channels_last,torchscript"),
                          example=lambda: (torch.rand(1, *SHAPE),), calibration=calibration)


def rss_bytes(pid: int | None = None) -> int:
    import psutil

    return psutil.Process(pid or os.getpid()).memory_info().rss


def shares(items: list, count: int) -> list[list]:
    size, extra = divmod(len(items), count)
    out, begin = [], 0
    for index in range(count):
        end = begin + size + (1 if index < extra else 0)
        out.append(items[begin:end])
        begin = end
    return out


def timed_loop(step, seconds: float, per_step: int) -> float:  # noqa: ANN001
    for _ in range(2):
        step()  # warm-up: graph specialisation and first-touch allocation
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        done += per_step
    return done / (time.perf_counter() - started)


def pinned_threads(count: int, cpus: list[int], make_step, seconds: float) -> float:  # noqa: ANN001
    """``count`` threads, each pinned with its own OpenMP team, looping on ``make_step(index)`` → (step, items)."""
    from launchkit.runtime.threads import _enter

    rates = [0.0] * count
    barrier = threading.Barrier(count)

    def run(index: int, share: list[int]) -> None:
        import torch

        _enter(share)
        step, items = make_step(index)
        with torch.inference_mode():
            step()
            barrier.wait()
            rates[index] = timed_loop(step, seconds, items)

    threads = [threading.Thread(target=run, args=(index, share)) for index, share in enumerate(shares(cpus, count))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(rates)


def in_process(mode: str, count: int, dtype: str, batch: int, seconds: float, cpus: list[int]) -> dict:
    import torch

    from launchkit.runtime import CPUPool, MultiStreamModule

    model = build_model(dtype)
    if mode == "bare":
        parts = shares(list(range(batch)), count)
        inputs = [torch.rand(len(part), *SHAPE) for part in parts]
        rate = pinned_threads(count, cpus, lambda i: ((lambda: model(inputs[i])), len(parts[i])), seconds)
    elif mode == "ceiling":
        handler_class, sample = example_handler()
        per_thread = max(1, batch // count)
        rate = pinned_threads(count, cpus, lambda i: handler_step(handler_class(), model, sample, per_thread), seconds)
    elif mode == "plain":
        torch.set_num_threads(len(cpus))
        x = torch.rand(batch, *SHAPE)
        with torch.inference_mode():
            rate = timed_loop(lambda: model(x), seconds, batch)
    else:
        streams = MultiStreamModule(model, num_streams=count, cpu_pool=CPUPool(cpus))
        x = torch.rand(batch, *SHAPE)
        if mode == "streams":
            rate = timed_loop(lambda: streams(x), seconds, batch)
        else:  # "streams, 2 in flight": the next call is submitted before the previous one is awaited
            pending = [streams.submit(x)]

            def step() -> None:
                pending.append(streams.submit(x))
                pending.pop(0).result()

            rate = timed_loop(step, seconds, batch)
            pending[0].result()
        streams.close()
    return {"img/s": rate, "rss MiB": rss_bytes() / 2**20}


def example_handler() -> tuple[type, bytes]:
    """The resnet18 example's handler class, from its archive, and the archive's sample JPEG."""
    from zipfile import ZipFile

    from launchkit.examples.build import build_example
    from launchkit.serve.worker.handler_api import install_ts_shim

    install_ts_shim()
    archive = Path(build_example("resnet18", tempfile.mkdtemp(prefix="lk-ceiling-")))
    namespace: dict = {}
    source = ZipFile(archive).read("resnet_handler.py").decode()
    exec(compile(source, "resnet_handler.py", "exec"), namespace)  # noqa: S102 - the example's own handler
    return namespace["ResNetHandler"], ZipFile(archive).read("sample.jpg")


def handler_step(handler, model, sample: bytes, images: int):  # noqa: ANN001, ANN201
    """The served work for ``images`` JPEG requests: the handler's preprocess, the model, its postprocess."""
    handler.labels = {}
    rows = [{"body": sample}] * images
    return (lambda: handler.postprocess(model(handler.preprocess(rows)))), images


def _process_share(cpus: list[int], dtype: str, batch: int, seconds: float, served: bool, start,  # noqa: ANN001
                   results) -> None:  # noqa: ANN001
    import torch

    os.sched_setaffinity(0, set(cpus))
    torch.set_num_threads(len(cpus))
    model = build_model(dtype)
    if served:  # the served work: the handler's preprocessing, the model, its postprocessing
        handler_class, sample = example_handler()
        step, items = handler_step(handler_class(), model, sample, batch)
    else:
        x = torch.rand(batch, *SHAPE)
        step, items = (lambda: model(x)), batch
    with torch.inference_mode():
        step()
        start.wait()
        rate = timed_loop(step, seconds, items)
    results.put((rate, rss_bytes()))


def processes(count: int, dtype: str, batch: int, seconds: float, cpus: list[int], served: bool = False) -> dict:
    """``count`` pinned processes, each on its share of the cores, running its share of the batch.

    ``served``: each loops on the JPEG through the example handler instead (the ceiling in processes,
    which no GIL holds back where the model is cheap).
    """
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(count), context.Queue()
    procs = [context.Process(target=_process_share, args=(share, dtype, max(1, batch // count), seconds, served,
                                                          start, results)) for share in shares(cpus, count)]
    for proc in procs:
        proc.start()
    answers = [results.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    return {"img/s": sum(rate for rate, _ in answers), "rss MiB": sum(rss for _, rss in answers) / 2**20}


def allocator_env(allocator: str) -> dict[str, str]:
    env = dict(os.environ)
    # the OpenMP runtime's default waiting for every configuration: with OMP_WAIT_POLICY=ACTIVE, idle
    # teams spin for good and steal the cores of the teams at work
    for key in ("OMP_WAIT_POLICY", "OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY", "KMP_AFFINITY", "LD_PRELOAD"):
        env.pop(key, None)
    if allocator != "default":
        from launchkit.launch.libraries import find_library

        found = find_library(allocator)
        if found is None:
            raise SystemExit(f"--allocator {allocator}: not found (set LAUNCHKIT_LIBRARY_PATH)")
        env["LD_PRELOAD"] = found.path
    return env


def measure(mode: str, count: int, dtype: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--count", str(count), "--dtype", dtype,
               "--batch", str(args.batch), "--seconds", str(args.seconds)]
    output = subprocess.run(command, capture_output=True, text=True, env=allocator_env(args.allocator), timeout=900)
    if output.returncode != 0:
        raise SystemExit(f"{mode} ×{count} {dtype} failed:\n{output.stderr[-3000:]}")
    result = json.loads(output.stdout.strip().splitlines()[-1])
    print(f"{dtype} {mode} ×{count}: {result['img/s']:.1f} img/s", file=sys.stderr, flush=True)
    return result


def child(args: argparse.Namespace) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if args.child in ("processes", "ceiling-processes"):
        result = processes(args.count, args.dtype, args.batch, args.seconds, cpus,
                           served=args.child == "ceiling-processes")
    else:
        result = in_process(args.child, args.count, args.dtype, args.batch, args.seconds, cpus)
    print(json.dumps(result))


def inprocess_part(args: argparse.Namespace, cores: int, checks: list[Check]) -> tuple[str, dict]:
    counts = sorted({cores, max(1, cores // 4)}, reverse=True)
    rows, data = [], {}
    for dtype in args.dtypes:
        figures = {f"plain, {cores} threads": measure("plain", cores, dtype, args)}
        for count in counts:
            figures[f"bare mechanism, {count} threads"] = measure("bare", count, dtype, args)
            figures[f"{count} streams, synchronous"] = measure("streams", count, dtype, args)
            figures[f"{count} streams, 2 in flight"] = measure("pipelined", count, dtype, args)
            figures[f"{count} pinned processes"] = measure("processes", count, dtype, args)
        data[dtype] = figures
        rows += [[dtype, name, f"{f['img/s']:.1f}", f"{f['rss MiB']:.0f}"] for name, f in figures.items()]
        scenario = f"resnet18 {dtype} batch {args.batch}, {cores} cores, allocator {args.allocator}"
        for count in counts:
            bare = figures[f"bare mechanism, {count} threads"]["img/s"]
            checks.append(relative(scenario, f"{count} streams, 2 in flight, img/s",
                                   figures[f"{count} streams, 2 in flight"]["img/s"], bare, 0.95, higher=True,
                                   peer_name=f"bare mechanism ({count} threads)"))
            checks.append(relative(scenario, f"{count} streams, synchronous, img/s",
                                   figures[f"{count} streams, synchronous"]["img/s"], bare, 0.95, higher=True,
                                   peer_name=f"bare mechanism ({count} threads)",
                                   note="IPEX's call semantics: every stream waits for the slowest"))
    return markdown_table(["dtype", "configuration", "img/s", "RSS MiB (total)"], rows), data


SHAPES = {  # name: serve flags (batch delay 5 ms everywhere)
    "N workers × batch 1": lambda n: ["--workers", str(n), "--batch-size", "1"],
    "N/4 workers × batch 4": lambda n: ["--workers", str(max(1, n // 4)), "--batch-size", "4"],
    "N/8 workers × 4 streams × batch 4": lambda n: ["--workers", str(max(1, n // 8)), "--streams", "4",
                                                    "--batch-size", "4"],
}


def closed_loop(url: str, body: bytes, seconds: float, concurrency: int | None = None) -> dict:
    """A closed loop of POSTs of ``body`` (a JPEG) to ``url``: 3 s of warm-up, then ``seconds`` measured.

    ``concurrency``: 4 requests per core of this machine in flight unless given. The load generator
    runs here, on the same cores as the server: the cores it used are reported beside its figures.
    """
    import psutil
    import uvloop

    from launchkit.bench.loadgen import LoadSpec, run_level
    from launchkit.bench.requests import Payload, Target, encode_requests
    from launchkit.bench.stats import summarize

    concurrency = concurrency or 4 * len(os.sched_getaffinity(0))
    target = Target.from_url(url)
    encoded = encode_requests(target, [Payload(body, "image/jpeg")])
    uvloop.run(run_level(target, encoded, LoadSpec(concurrency=concurrency, duration_s=3)))  # warm-up
    me = psutil.Process()
    cpu_before, wall_before = sum(me.cpu_times()[:2]), time.perf_counter()
    samples = uvloop.run(run_level(target, encoded, LoadSpec(concurrency=concurrency, duration_s=seconds)))
    loadgen_cores = (sum(me.cpu_times()[:2]) - cpu_before) / (time.perf_counter() - wall_before)
    summary = summarize(samples, concurrency, None)
    return {"req/s": summary.throughput, "p50 ms": summary.latency_ms.get("p50", float("nan")),
            "p99 ms": summary.latency_ms.get("p99", float("nan")), "errors": summary.requests_failed,
            "load generator cores": loadgen_cores}


def served_level(archive: Path, flags: list[str], body: bytes, seconds: float, allocator: str | None) -> dict:
    """``launchkit serve ARCHIVE FLAGS`` under :func:`closed_loop`; ``allocator`` None: serve's own choice."""
    from launchkit.bench.server import ServerUnderTest

    # default: the C library's malloc (flags that set the launcher's arguments already keep theirs)
    launcher = (["--cpu-launcher-args", f"--memory-allocator {allocator}"]
                if allocator and "--cpu-launcher-args" not in flags else [])
    log = Path(tempfile.mkstemp(prefix="lk-streams-serve-", suffix=".log")[1])
    delay = [] if "--max-batch-delay" in flags else ["--max-batch-delay", "5"]
    with ServerUnderTest(archive, [*flags, *delay, *launcher], log) as server:
        return closed_loop(f"{server.url}/predictions/{server.model}", body, seconds)


def gated_archive(archive: Path, dtype: str, work: Path) -> tuple[Path | None, str]:
    """``launchkit optimize --dtype DTYPE`` on the archive; (None, why) when its gate refuses it."""
    out = work / f"resnet18-{dtype}.mar"
    done = subprocess.run([sys.executable, "-m", "launchkit", "optimize", str(archive), "--dtype", dtype, "-o",
                           str(out), "--seconds", "2"], capture_output=True, text=True, timeout=900)
    verdict = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    print(f"optimize --dtype {dtype}: exit {done.returncode}: {verdict}", file=sys.stderr, flush=True)
    if done.returncode != 0 or not out.exists():
        return None, f"refused (exit {done.returncode}): {(done.stdout + done.stderr).strip()[-400:]}"
    return out, verdict


TUNE_SPACE = "workers=1,2,4,8,16;streams=1,2,4;batch=1,4,8;delay=5"


def tuned_flags(archive: Path, minutes: float, work: Path, space: str = TUNE_SPACE) -> tuple[Path, list[str]] | None:
    """``launchkit tune`` on the archive for ``minutes``; its best configuration as (archive, serve flags)."""
    folder = work / f"tune-{archive.stem}"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "launchkit", "tune", str(archive), "--max-time", f"{minutes * 60:g}",
                           "--space", space, "--level-seconds", "2", "--report-dir", str(folder), "--quiet"],
                          capture_output=True, text=True, timeout=minutes * 60 + 600)
    print(f"tune {archive.name} ({time.perf_counter() - started:.0f} s): exit {done.returncode}: "
          f"{done.stdout.strip()[-300:]}", file=sys.stderr, flush=True)
    command = folder / "serve-command.txt"
    if not command.exists():
        command = folder / "best" / "serve-command.txt"
    if done.returncode != 0 or not command.exists():
        return None
    words = shlex.split(command.read_text())
    return Path(words[2]), words[3:]


def ceilings(dtype: str, counts: list[int], args: argparse.Namespace) -> dict[str, float]:
    """The served work in process: K pinned threads of one process, and K pinned processes."""
    out = {}
    for count in counts:
        out[f"{count} pinned thread{'s' * (count > 1)}"] = measure("ceiling", count, dtype, args)["img/s"]
        out[f"{count} pinned process{'es' * (count > 1)}"] = measure("ceiling-processes", count, dtype, args)["img/s"]
    return out


def served_part(args: argparse.Namespace, cores: int, checks: list[Check]) -> tuple[str, dict]:
    from zipfile import ZipFile

    work = Path(tempfile.mkdtemp(prefix="lk-streams-"))
    subprocess.run([sys.executable, "-m", "launchkit.examples.build", "--export-path", str(work), "resnet18"],
                   check=True, capture_output=True)
    archive = work / "resnet18.mar"
    sample = ZipFile(archive).read("sample.jpg")
    counts = sorted({cores, max(1, cores // 4)}, reverse=True)
    rows, data = [], {}
    for dtype in args.dtypes:
        ceiling_by = ceilings(dtype, counts, args)
        ceiling_name = max(ceiling_by, key=ceiling_by.__getitem__)
        ceiling = ceiling_by[ceiling_name]
        configs: dict[str, tuple[Path, list[str]]] = {
            _named(name, cores): (archive, [*flags(cores), "--optimization", f"{dtype},channels_last,torchscript"])
            for name, flags in SHAPES.items()}
        gate = ""
        if args.tune_minutes > 0:  # tune searches launchkit optimize's artifact, as a user would run it
            built, gate = gated_archive(archive, dtype, work)
            allocator = f";allocator={args.allocator}"
            tuned = tuned_flags(built, args.tune_minutes, work, TUNE_SPACE + allocator) if built else None
            if tuned is not None:
                configs["tune's best: " + " ".join(tuned[1])] = tuned
        figures: dict[str, dict] = {}
        for name, (served, flags) in configs.items():
            figures[name] = served_level(served, flags, sample, args.seconds, args.allocator)
            print(f"{dtype} served {name}: {figures[name]['req/s']:.1f} req/s", file=sys.stderr, flush=True)
        best_name = max(figures, key=lambda key: figures[key]["req/s"])
        best = figures[best_name]
        photo = served_level(*configs[best_name], PHOTO.read_bytes(), args.seconds, args.allocator)
        figures[f"{best_name}, the 112 KB photo"] = photo
        data[dtype] = {"ceiling img/s": ceiling, "ceilings": ceiling_by, "gate": gate, **figures}
        rows += [[dtype, f"ceiling, {name} ({len(sample):,}-byte JPEG)", f"{rate:.1f}", "-", "-", "-", "-"]
                 for name, rate in ceiling_by.items()]
        rows += [[dtype, name, f"{f['req/s']:.1f}", f"{f['p50 ms']:.1f}", f"{f['p99 ms']:.1f}",
                  f"{f['load generator cores']:.2f}", f["errors"]] for name, f in figures.items()]
        checks.append(relative(f"served resnet18 {dtype} (sample JPEG), {cores} cores, allocator {args.allocator}",
                               f"best served req/s ({best_name})", best["req/s"], ceiling, 0.9, higher=True,
                               errors=best["errors"], peer_name=f"in-process ceiling ({ceiling_name})",
                               note=f"load generator on the same cores: {best['load generator cores']:.2f} cores"))
    table = markdown_table(["dtype", "configuration", "req/s (img/s)", "p50 ms", "p99 ms", "load generator cores",
                            "errors"], rows)
    return table, data


def _named(key: str, cores: int) -> str:
    return key.replace("N/8", str(max(1, cores // 8))).replace("N/4", str(max(1, cores // 4))).replace(
        "N ", f"{cores} ")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dtypes", default="fp32,bf16,int8")
    parser.add_argument("--part", choices=("inprocess", "served", "all"), default="all")
    parser.add_argument("--allocator", choices=("default", "tcmalloc", "jemalloc"), default="default")
    parser.add_argument("--tune-minutes", type=float, default=0.0,
                        help="served part: also serve what launchkit tune finds in this long on each dtype's "
                             "launchkit optimize artifact")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    args.dtypes = args.dtypes.split(",")
    cores = len(os.sched_getaffinity(0))
    checks: list[Check] = []
    tables, data = [], {"allocator": args.allocator, "batch": args.batch, "seconds": args.seconds}
    if args.part in ("inprocess", "all"):
        table, data["in process"] = inprocess_part(args, cores, checks)
        tables.append(table)
    if args.part in ("served", "all"):
        table, data["served"] = served_part(args, cores, checks)
        tables.append(table)
    title = f"Streams, the bare mechanism and the served ceiling ({cores} cores, allocator {args.allocator})"
    return write(results_dir(f"streams-{args.part}-{args.allocator}"), title, "\n\n".join(tables), data, checks)


if __name__ == "__main__":
    sys.exit(main())
