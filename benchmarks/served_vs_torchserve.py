"""launchkit's best served configurations against TorchServe 0.12's best, live, in one run (issue 22).

    python benchmarks/served_vs_torchserve.py [--seconds 10] [--ts-workers 1,N/4,N] [--gated int8]
                                              [--tune-minutes 0] [--photo]

The same archive (the bundled resnet18 with its fp32 weights), the same JPEG (the archive's sample;
``--photo``: the 112 KB photo too), the same closed-loop load (launchkit's load generator, 4 requests
per core in flight, on the same cores as the servers; the cores it used are reported beside).

* TorchServe: 1, N/4 and N workers, batch 1, with its own ``cpu_launcher_enable`` recipe (torch's
  run_cpu pins each worker to its share of the cores; without numactl it uses taskset); its best
  by throughput is the peer figure.
* launchkit fp32: the archive served with ``--optimization fp32,channels_last,torchscript`` (what
  ``launchkit optimize`` would build, without leaving fp32) at N workers × batch 1 and N/8 workers
  × 4 streams × batch 4.
* launchkit's accuracy-gated dtype: ``launchkit optimize ARCHIVE --dtype int8`` (its gate: top-1
  agreement with fp32 on inputs it draws; the weights are random, so this measures speed, not
  accuracy), served as written at the same shapes. An artifact the gate refuses is not served.
* ``--tune-minutes M``: ``launchkit tune`` searches each dtype's archive for M minutes first, and
  its best configuration (its ``serve-command.txt``) is served beside the fixed shapes.

Targets (issue 22), each only at ≤ 1/2 TorchServe's p99: launchkit's best fp32 ≥ 1.5× TorchServe's
best fp32; launchkit's best gated dtype ≥ 4× it. Writes results/<ts>-served-vs-torchserve/.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from zipfile import ZipFile

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from _report import Check, markdown_table, relative, results_dir, write  # noqa: E402
from peers import PeerUnavailable, TorchServe  # noqa: E402
from streams import PHOTO, closed_loop, gated_archive, served_level, tuned_flags  # noqa: E402

SHAPES = {
    "N workers × b1": lambda n: ["--workers", str(n), "--batch-size", "1"],
    "N/8 workers × 4 streams × b4": lambda n: ["--workers", str(max(1, n // 8)), "--streams", "4",
                                               "--batch-size", "4"],
}


def named(template: str, cores: int) -> str:
    return template.replace("N/8", str(max(1, cores // 8))).replace("N/4", str(max(1, cores // 4))).replace(
        "N ", f"{cores} ")


def worker_counts(text: str, cores: int) -> list[int]:
    counts = {int(named(part.strip() + " ", cores)) for part in text.split(",")}
    return sorted(count for count in counts if 1 <= count <= cores)


def allocator_folder() -> dict[str, str]:
    """Where torch's run_cpu (TorchServe's launcher) finds tcmalloc and jemalloc: ``$VIRTUAL_ENV/lib``.

    It looks for ``libtcmalloc.so`` and ``libjemalloc.so`` in a few fixed folders, none of them
    Debian's; the libraries launchkit finds (``LAUNCHKIT_LIBRARY_PATH`` first) are linked there under
    those names, so TorchServe's recipe preloads the same allocator launchkit's workers get.
    """
    from launchkit.launch.libraries import find_library

    folder = Path(tempfile.mkdtemp(prefix="lk-ts-allocators-"))
    (folder / "lib").mkdir()
    for name in ("tcmalloc", "jemalloc"):
        found = find_library(name)
        if found is not None:
            (folder / "lib" / f"lib{name}.so").symlink_to(found.path)
    return {"VIRTUAL_ENV": str(folder)}


def torchserve_level(archive: Path, workers: int, body: bytes, seconds: float, launcher: bool) -> dict:
    config = {"cpu_launcher_enable": "true", "cpu_launcher_args": "--use_logical_core"} if launcher else {}
    log = Path(tempfile.mkstemp(prefix="lk-torchserve-", suffix=".log")[1])
    started = time.perf_counter()
    with TorchServe([archive], workers=workers, config=config, log=log, env=allocator_folder()) as server:
        ready_s = time.perf_counter() - started
        result = closed_loop(server.predictions(archive.stem), body, seconds)
    text = log.read_text(errors="replace")
    # whether its launcher ran (it logs a warning and goes on without it where run_cpu cannot start)
    result["launcher"] = ("not available" if "run_cpu is not available" in text
                          else "on" if launcher else "off")
    result["allocator"] = ("tcmalloc" if "Use TCMalloc" in text else "jemalloc" if "Use JeMalloc" in text
                           else "C library malloc")
    result["ready s"] = ready_s
    log.unlink()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per configuration")
    parser.add_argument("--ts-workers", default="1,N/4,N", help="TorchServe worker counts (N: this machine's cores)")
    parser.add_argument("--gated", default="int8", help="dtypes built by launchkit optimize's gate (int8, bf16)")
    parser.add_argument("--no-launcher", action="store_true", help="TorchServe without cpu_launcher_enable")
    parser.add_argument("--tune-minutes", type=float, default=0.0, help="also serve launchkit tune's best")
    parser.add_argument("--photo", action="store_true", help="also measure the best of each with the 112 KB photo")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    work = Path(tempfile.mkdtemp(prefix="lk-vs-ts-"))
    subprocess.run([sys.executable, "-m", "launchkit.examples.build", "--export-path", str(work), "resnet18"],
                   check=True, capture_output=True)
    archive = work / "resnet18.mar"
    sample = ZipFile(archive).read("sample.jpg")
    bodies = {"sample": sample, **({"photo": PHOTO.read_bytes()} if args.photo else {})}
    rows: list[list] = []
    data: dict = {"cores": cores, "seconds": args.seconds, "torchserve": {}, "launchkit": {}}
    checks: list[Check] = []

    def row(server: str, name: str, figures: dict, extra: str = "") -> None:
        rows.append([server, name, f"{figures['req/s']:,.1f}", f"{figures['p50 ms']:.1f}", f"{figures['p99 ms']:.1f}",
                     f"{figures['load generator cores']:.2f}", figures["errors"], extra])

    # TorchServe, its best of the worker counts
    try:
        for workers in worker_counts(args.ts_workers, cores):
            figures = torchserve_level(archive, workers, sample, args.seconds, not args.no_launcher)
            data["torchserve"][f"{workers} workers × b1"] = figures
            row("TorchServe 0.12", f"{workers} workers × b1", figures,
                f"launcher {figures['launcher']}, {figures['allocator']}, ready in {figures['ready s']:.0f} s")
            print(f"TorchServe {workers} workers: {figures['req/s']:.1f} req/s", file=sys.stderr, flush=True)
    except PeerUnavailable as error:
        print(f"TorchServe unavailable: {error}", file=sys.stderr)
        data["torchserve_unavailable"] = str(error)
    peer_name = max(data["torchserve"], key=lambda key: data["torchserve"][key]["req/s"], default=None)
    peer = data["torchserve"].get(peer_name) if peer_name else None

    # launchkit: fp32, then each gated dtype
    variants: dict[str, tuple[Path, list[str]]] = {"fp32": (archive, ["--optimization", "fp32,channels_last,torchscript"])}
    for dtype in filter(None, args.gated.split(",")):
        built, verdict = gated_archive(archive, dtype, work)
        data["launchkit"][f"{dtype} gate"] = verdict
        if built is not None:
            variants[dtype] = (built, [])
    for dtype, (served, extra) in variants.items():
        figures: dict[str, dict] = {}
        configs = {named(name, cores): (served, [*flags(cores), *extra]) for name, flags in SHAPES.items()}
        if args.tune_minutes > 0:
            tuned = tuned_flags(served, args.tune_minutes, work)
            if tuned is not None:
                configs["tune's best: " + " ".join(tuned[1])] = (tuned[0], [*tuned[1], *extra])
        for name, (model, flags) in configs.items():
            figures[name] = served_level(model, flags, sample, args.seconds, None)
            print(f"launchkit {dtype} {name}: {figures[name]['req/s']:.1f} req/s", file=sys.stderr, flush=True)
        best_name = max(figures, key=lambda key: figures[key]["req/s"])
        for name, result in figures.items():
            row(f"launchkit {dtype}", name, result, "best" if name == best_name else "")
        if "photo" in bodies:
            model, flags = configs[best_name]
            photo = served_level(model, flags, bodies["photo"], args.seconds, None)
            row(f"launchkit {dtype}", f"{best_name}, the 112 KB photo", photo)
            figures[f"{best_name}, photo"] = photo
        data["launchkit"][dtype] = figures
        best = figures[best_name]
        factor = 1.5 if dtype == "fp32" else 4.0
        p99_ok = peer is not None and best["p99 ms"] <= peer["p99 ms"] / 2
        check = relative(f"resnet18 {dtype} served, sample JPEG, {cores} cores", f"best req/s ({best_name})",
                         best["req/s"], peer["req/s"] if peer else None, factor, higher=True,
                         errors=best["errors"] + (peer["errors"] if peer else 0), peer_name=f"TorchServe fp32 "
                         f"({peer_name})" if peer else "TorchServe",
                         note=(f"p99 {best['p99 ms']:.1f} ms vs TorchServe's {peer['p99 ms']:.1f} ms: "
                               f"{'within' if p99_ok else 'not within'} 1/2" if peer else ""))
        if check.met and not p99_ok:  # the throughput alone does not meet a target that bounds the latency too
            check = Check(check.scenario, check.metric, check.ours, check.target + " at ≤ 1/2 its p99", False,
                          check.peer, check.ratio, check.errors, check.note, check.peer_name)
        checks.append(check)
    table = markdown_table(["server", "configuration", "req/s", "p50 ms", "p99 ms", "load generator cores", "errors",
                            "note"], rows)
    return write(results_dir("served-vs-torchserve"), f"resnet18 served: launchkit against TorchServe 0.12 "
                 f"({cores} cores)", table, data, checks)


if __name__ == "__main__":
    sys.exit(main())
