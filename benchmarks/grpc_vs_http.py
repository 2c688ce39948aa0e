"""gRPC against HTTP on one server, and against TorchServe's gRPC live (issue 28).

    python benchmarks/grpc_vs_http.py [--levels 1,4,8] [--window-ms 3000] [--seconds 8] [--no-torchserve]
                                      [--part all|perf_analyzer|predictions] [--grpc-processes 1,0]
                                      [--clients 1,4] [--bare grpc.aio,grpclib]

1. perf_analyzer (tritonclient 2.51.0's binary; ``$PERF_ANALYZER`` on a machine without .venv-clients)
   against one `launchkit serve` of the bundled tiny example (batch 1) with ``--grpc-address``: at each
   concurrency its default mode (v2, binary tensors) over HTTP and over gRPC (``-i grpc``, raw
   contents), interleaved; its own throughput and p50/p99, and the cores the server's frontend process
   and its gRPC relay processes kept busy over each perf_analyzer run. Target: gRPC ≥ 0.90× HTTP
   at c ≥ 4. One server per ``--grpc-processes`` value, one after the other (1, the default: gRPC in
   one relay process; 0: gRPC on the frontend's event loop, as before the relays), so the two ways
   are compared in one run.
   For scale, the same perf_analyzer runs against a bare grpc.aio server in this script (``--child
   grpc.aio``) that answers ModelInfer with a canned message: what gRPC's Python server alone allows
   here; ``--bare grpc.aio,grpclib`` adds the same from grpclib (pure Python on one thread), to choose
   the relay's server by measurement.
   Beside each row, the CPU time the server process spent per answered call: the bare server's is
   what grpc.aio itself costs per call, a floor under launchkit's gRPC path.
2. TorchServe's gRPC ``Predictions`` (inference.proto), live: TorchServe 0.12 and launchkit serving the
   same tiny archive (one worker, batch 1), driven by the same closed-loop grpc.aio client (the
   PredictionsRequest written by hand: model name and ``input={"data": 256 bytes of float32}``) at
   the same concurrency, one after the other. Target: launchkit ≥ 3× TorchServe's throughput.
   The client shares the machine; its CPU share is reported beside. ``--clients 1,4`` measures the
   same calls in flight from one client process (one connection: one relay serves it) and spread
   over four (four connections, as separate users make; more relays can share them).

Writes results/<ts>-grpc-vs-http/.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from _report import Check, markdown_table, relative, results_dir, write  # noqa: E402
from drop_in import perf_analyzer  # noqa: E402
from peers import PeerUnavailable, TorchServe, free_ports  # noqa: E402
from serve_anchors import Served  # noqa: E402

WARM_UP = 20  # calls each client makes before the measured seconds
PREDICTIONS = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions"


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def predictions_request(model: str, data: bytes) -> bytes:
    """TorchServe's PredictionsRequest: model_name = 1, input = 3 (a map entry: key = 1, value = 2)."""
    return _field(1, model.encode()) + _field(3, _field(1, b"data") + _field(2, data))


def _client(target: str, body: bytes, concurrency: int, start_at: float, seconds: float) -> tuple[list[float], int, float]:
    """One client process: its own channel (one connection), ``concurrency`` callers each sending ``body``
    to Predictions as soon as its last answer came, from ``start_at`` (wall clock) for ``seconds``.
    Returns the latencies, the errors and the CPU seconds this process spent."""
    import grpc
    import psutil

    me = psutil.Process()
    busy = [0.0, 0.0]  # CPU seconds at the start and the end of the measured seconds

    async def run() -> tuple[list[float], int]:
        async with grpc.aio.insecure_channel(target) as channel:
            call = channel.unary_unary(PREDICTIONS)  # bytes in, bytes out
            for _ in range(WARM_UP):
                await call(body)
            await asyncio.sleep(max(0.0, start_at - time.time()))
            busy[0] = sum(me.cpu_times()[:2])
            latencies: list[float] = []
            errors = 0
            deadline = time.perf_counter() + seconds

            async def caller() -> None:
                nonlocal errors
                while time.perf_counter() < deadline:
                    started = time.perf_counter()
                    try:
                        await call(body)
                        latencies.append(time.perf_counter() - started)
                    except grpc.aio.AioRpcError:
                        errors += 1

            await asyncio.gather(*(caller() for _ in range(concurrency)))
            busy[1] = sum(me.cpu_times()[:2])
            return latencies, errors

    latencies, errors = asyncio.run(run())
    return latencies, errors, busy[1] - busy[0]


def closed_loop_grpc(target: str, body: bytes, concurrency: int, seconds: float, clients: int = 1) -> dict:
    """``concurrency`` callers in all, spread over ``clients`` client processes (each its own connection, as
    separate users are), sending ``body`` to Predictions as soon as each one's last answer came."""
    from concurrent.futures import ProcessPoolExecutor

    shares = [concurrency // clients + (1 if index < concurrency % clients else 0) for index in range(clients)]
    start_at = time.time() + 2.0 + 0.2 * clients  # after every client's start and warm-up
    with ProcessPoolExecutor(clients) as pool:
        results = list(pool.map(_client, [target] * clients, [body] * clients, shares, [start_at] * clients,
                                [seconds] * clients))
    latencies = sorted(latency for each, _, _ in results for latency in each)
    errors = sum(each for _, each, _ in results)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    return {"req/s": len(latencies) / seconds, "p50 ms": pct(0.50), "p99 ms": pct(0.99), "errors": errors,
            "clients": clients, "calls": len(latencies) + errors + WARM_UP * clients, "client cores": sum(cpu for _, _, cpu in results) / seconds}


def canned_answers() -> dict[str, tuple[Any, Any]]:
    """The calls perf_analyzer makes, by method: (request type, canned answer)."""
    from google.protobuf import json_format

    from launchkit.serve.api.protos import open_inference_pb2 as pb

    tensor = {"name": "input0", "datatype": "FP32", "shape": [-1, 64]}
    return {
        "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse(
            model_name="tiny", model_version="1", raw_output_contents=[bytes(40)],
            outputs=[pb.ModelInferResponse.InferOutputTensor(name="output0", datatype="FP32", shape=[1, 10])])),
        "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse(live=True)),
        "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse(ready=True)),
        "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse(ready=True)),
        "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse(name="bare", version="1")),
        "ModelMetadata": (pb.ModelMetadataRequest, json_format.ParseDict(
            {"name": "tiny", "versions": ["1"], "platform": "bare", "inputs": [tensor],
             "outputs": [{**tensor, "name": "output0", "shape": [-1, 10]}]}, pb.ModelMetadataResponse())),
        "ModelConfig": (pb.ModelConfigRequest, json_format.ParseDict({"config": {
            "name": "tiny", "max_batch_size": 1, "input": [{"name": "input0", "data_type": "TYPE_FP32", "dims": [64]}],
            "output": [{"name": "output0", "data_type": "TYPE_FP32", "dims": [10]}]}}, pb.ModelConfigResponse())),
        "ModelStatistics": (pb.ModelStatisticsRequest, pb.ModelStatisticsResponse(
            model_stats=[pb.ModelStatistics(name="tiny", version="1")])),
    }


def bare_server(port: int) -> None:
    """A grpc.aio server answering the calls perf_analyzer makes with canned messages (no queue, no worker)."""
    import grpc

    from launchkit.core.eventloop import run

    def handler(request_type, answer):  # noqa: ANN001, ANN202
        async def answer_it(request, context):  # noqa: ANN001, ANN202
            return answer

        return grpc.unary_unary_rpc_method_handler(answer_it, request_deserializer=request_type.FromString,
                                                   response_serializer=type(answer).SerializeToString)

    async def serve() -> None:
        server = grpc.aio.server()
        server.add_registered_method_handlers("inference.GRPCInferenceService", {
            name: handler(request_type, answer) for name, (request_type, answer) in canned_answers().items()})
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    run(serve())


def bare_grpclib_server(port: int) -> None:
    """The same canned answers from grpclib (gRPC in pure Python on h2, all on the event loop's thread:
    no poller thread handing each call over, as grpc.aio has), for comparison. Requests are read and
    answers sent as bytes (a codec that passes them through), as a relay would forward them."""
    from grpclib.const import Cardinality, Handler
    from grpclib.encoding.base import CodecBase
    from grpclib.server import Server, Stream

    from launchkit.core.eventloop import run

    class Bytes(CodecBase):
        __content_subtype__ = "proto"

        def encode(self, message: Any, message_type: Any) -> bytes:
            return message

        def decode(self, data: bytes, message_type: Any) -> bytes:
            return data

    def answering(answer: bytes) -> Callable[[Stream], Any]:
        async def answer_it(stream: Stream) -> None:
            await stream.recv_message()
            await stream.send_message(answer)

        return answer_it

    class Canned:
        def __mapping__(self) -> dict[str, Handler]:
            return {f"/inference.GRPCInferenceService/{name}": Handler(
                answering(answer.SerializeToString()), Cardinality.UNARY_UNARY, None, None)
                for name, (_, answer) in canned_answers().items()}

    async def serve() -> None:
        server = Server([Canned()], codec=Bytes())
        await server.start("127.0.0.1", port)
        await server.wait_closed()

    run(serve())


BARE_SERVERS = {"grpc.aio": bare_server, "grpclib": bare_grpclib_server}


def relays_of(frontend: Any) -> list[Any]:
    """The server's gRPC relay processes (children running launchkit.serve.api.grpc_relay)."""
    return [child for child in frontend.children() if "launchkit.serve.api.grpc_relay" in " ".join(child.cmdline())]


def frontend_cost(process: Any, run: Callable[[], dict], relays: Sequence[Any] = ()) -> dict:
    """``run()``'s figures with the cores ``process`` (and the gRPC ``relays``, and its other descendants:
    the workers) kept busy meanwhile, and their CPU µs per answered call."""
    def cpu(processes: list[Any]) -> float:
        return sum(sum(each.cpu_times()[:2]) for each in processes)

    relay_pids = {relay.pid for relay in relays}
    workers = [child for child in process.children(recursive=True) if child.pid not in relay_pids]
    frontend_before, relays_before, wall_before = cpu([process]), cpu(list(relays)), time.perf_counter()
    workers_before = cpu(workers)
    figures = run()
    wall = time.perf_counter() - wall_before
    # perf_analyzer's infer/s is over its measured windows; the CPU is over the whole run (its warm-up too),
    # so µs per call is CPU over the run's calls at that rate: an upper bound, the same for every row.
    # A figure with "calls" counts every answered call itself (warm-up included), and its cores are
    # µs per call at the measured rate (the run's wall time includes the clients' start)
    calls = figures["calls"] if "calls" in figures else figures["infer/s"] * wall
    for name, busy in (("frontend", cpu([process]) - frontend_before), ("relays", cpu(list(relays)) - relays_before),
                       ("workers", cpu(workers) - workers_before)):
        per_call = busy / calls if calls else float("nan")
        figures[f"{name} µs/call"] = per_call * 1e6
        figures[f"{name} cores"] = per_call * figures["req/s"] if "calls" in figures else busy / wall
    return figures


def perf_analyzer_row(server: str, protocol: str, level: int, figures: dict) -> list:
    relays = figures.get("relays cores", 0.0)
    return [server, f"perf_analyzer v2 binary over {protocol.upper()}", level, f"{figures['infer/s']:,.0f}",
            f"{figures['p50 ms']:.2f}", f"{figures['p99 ms']:.2f}", "-", f"{figures['frontend cores']:.2f}",
            f"{figures['frontend µs/call']:.0f}", f"{relays:.2f}" if relays else "-",
            f"{figures['relays µs/call']:.0f}" if relays else "-", f"{figures['workers cores']:.2f}",
            f"{figures['workers µs/call']:.0f}", figures["errors"]]


def grpc_way(processes: int) -> str:
    return f"gRPC in {processes} relay process{'es' if processes > 1 else ''}" if processes else \
        "gRPC on the frontend's loop"


def perf_analyzer_part(tiny: Path, levels: list[int], window_ms: int, work: Path, cores: int, data: dict,
                       checks: list[Check], grpc_processes: list[int], bare: list[str]) -> list[list]:
    """Part 1: perf_analyzer over HTTP and over gRPC against one server per way of serving gRPC,
    interleaved per level; then against each ``bare`` server, for scale. Returns the table's rows."""
    import psutil

    rows = []
    for processes in grpc_processes:
        way = grpc_way(processes)
        (grpc_port,) = free_ports(1)
        with Served(tiny, "--grpc-address", f"127.0.0.1:{grpc_port}", "--grpc-processes", str(processes)) as server:
            frontend = psutil.Process(server.proc.pid)
            relays = relays_of(frontend)
            for level in levels:
                figures = {}
                for protocol, url in (("http", server.url.removeprefix("http://")), ("grpc", f"127.0.0.1:{grpc_port}")):
                    figures[protocol] = frontend_cost(frontend, lambda: perf_analyzer(url, level, window_ms, work,
                                                                                      None, protocol), relays)
                    print(f"{way}: perf_analyzer c={level} {protocol}: {figures[protocol]['infer/s']:.0f} infer/s",
                          file=sys.stderr, flush=True)
                    rows.append(perf_analyzer_row(f"launchkit, {way}", protocol, level, figures[protocol]))
                data["perf_analyzer"].setdefault(way, {})[level] = figures
                if level >= 4:
                    checks.append(relative(f"tiny, batch 1, {cores} cores, c={level}, {way}",
                                           "gRPC infer/s (perf_analyzer)",
                                           figures["grpc"]["infer/s"], figures["http"]["infer/s"], 0.9, higher=True,
                                           errors=figures["grpc"]["errors"] + figures["http"]["errors"],
                                           peer_name="HTTP v2 binary, same server"))

    # the same perf_analyzer runs against bare gRPC servers: what a Python gRPC server alone costs here
    for kind in bare:
        rows += bare_rows(kind, levels, window_ms, work, data)
    return rows


def bare_rows(kind: str, levels: list[int], window_ms: int, work: Path, data: dict) -> list[list]:
    """perf_analyzer over gRPC at each level against a bare server of ``kind`` (canned answers)."""
    import psutil

    from launchkit.launch.spawn import spawn, stop

    (bare_port,) = free_ports(1)
    bare = spawn([sys.executable, __file__, "--child", kind, str(bare_port)])
    rows = []
    try:
        deadline = time.monotonic() + 60
        while True:  # until it listens
            try:
                socket.create_connection(("127.0.0.1", bare_port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or bare.poll() is not None:
                    raise SystemExit(f"the bare {kind} server did not start") from None
                time.sleep(0.05)
        for level in levels:
            figures = frontend_cost(psutil.Process(bare.pid), lambda: perf_analyzer(
                f"127.0.0.1:{bare_port}", level, window_ms, work, None, "grpc"))
            print(f"bare {kind}: perf_analyzer c={level}: {figures['infer/s']:.0f} infer/s", file=sys.stderr, flush=True)
            data.setdefault(f"bare {kind}", {})[level] = figures
            rows.append(perf_analyzer_row(f"a bare {kind} server (canned answers)", "grpc", level, figures))
    finally:
        stop(bare, 5)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--levels", default="1,4,8")
    parser.add_argument("--window-ms", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per Predictions level")
    parser.add_argument("--no-torchserve", action="store_true")
    parser.add_argument("--worker-cores", default="default",
                        help="part 2: launchkit's worker as served by default (default: the tiny model's on one "
                             "core since 2026-12-03) or on N cores (--cpu-launcher-args '--ncores-per-instance N'); "
                             "a list (default,16) measures each")
    parser.add_argument("--clients", default="1",
                        help="part 2: client processes sharing the calls in flight, each its own connection; a list "
                             "(1,4) measures each")
    parser.add_argument("--part", choices=("all", "perf_analyzer", "predictions"), default="all",
                        help="perf_analyzer: part 1 and the bare server only; predictions: part 2 only")
    parser.add_argument("--grpc-processes", default="1,0",
                        help="ways of serving gRPC to compare (launchkit serve --grpc-processes); part 2 "
                             "measures each relay count but 0")
    parser.add_argument("--bare", default="grpc.aio",
                        help="part 1: bare gRPC servers with canned answers, measured at every level for scale "
                             f"(a list of {', '.join(BARE_SERVERS)}; grpclib must be installed); '' for none")
    args = parser.parse_args()
    if args.child:
        BARE_SERVERS[args.child[0]](int(args.child[1]))
        return 0
    bare = [kind for kind in args.bare.split(",") if kind]
    if unknown := set(bare) - set(BARE_SERVERS):
        parser.error(f"--bare: unknown {', '.join(sorted(unknown))}; choose from {', '.join(BARE_SERVERS)}")
    if "grpclib" in bare and importlib.util.find_spec("grpclib") is None:  # before minutes of other measuring
        parser.error("--bare grpclib: grpclib is not installed (pip install grpclib)")

    levels = [int(level) for level in args.levels.split(",")]
    grpc_processes = [int(count) for count in args.grpc_processes.split(",")]
    cores = len(os.sched_getaffinity(0))
    work = Path(tempfile.mkdtemp(prefix="lk-grpc-"))
    subprocess.run([sys.executable, "-m", "launchkit.examples.build", "--export-path", str(work), "tiny"],
                   check=True, capture_output=True)
    tiny = work / "tiny.mar"
    row = struct.pack("<64f", *[i / 64 for i in range(64)])
    checks: list[Check] = []
    data: dict = {"cores": cores, "perf_analyzer": {}, "predictions": {}}
    rows: list[list] = []

    if args.part in ("all", "perf_analyzer"):
        rows += perf_analyzer_part(tiny, levels, args.window_ms, work, cores, data, checks, grpc_processes, bare)

    if args.part in ("all", "predictions"):
        rows += predictions_part(tiny, row, max(levels), args, cores, data, checks)
    table = markdown_table(["server", "path", "concurrency", "infer/s", "p50 ms", "p99 ms", "client cores",
                            "server frontend cores", "frontend CPU µs per call", "relay cores",
                            "relay CPU µs per call", "worker cores", "worker CPU µs per call", "errors"], rows)
    return write(results_dir("grpc-vs-http"), f"gRPC against HTTP, and TorchServe's gRPC live ({cores} cores)", table,
                 data, checks)


def way_name(way: tuple[int, int | None]) -> str:
    processes, cores_each = way
    return grpc_way(processes) + (f", the worker on {cores_each} core{'s' if cores_each > 1 else ''}" if cores_each
                                  else ", the worker as served by default")


def predictions_part(tiny: Path, row: bytes, level: int, args: argparse.Namespace, cores: int, data: dict,
                     checks: list[Check]) -> list[list]:
    """Part 2: TorchServe's Predictions over gRPC, launchkit and TorchServe live, the same closed-loop load
    (``level`` calls in flight in all) from one client process and from ``--clients`` of them."""
    import psutil

    rows = []
    body = predictions_request("tiny", row)
    clients_list = [int(count) for count in args.clients.split(",")]
    relay_counts = [int(count) for count in args.grpc_processes.split(",") if int(count) > 0] or [1]
    worker_cores = [None if cores == "default" else int(cores) for cores in args.worker_cores.split(",")]
    ways = [(processes, cores) for processes in relay_counts for cores in worker_cores]
    ours: dict[tuple[tuple[int, int | None], int], dict] = {}
    for way in ways:
        processes, cores_each = way
        (ours_port,) = free_ports(1)
        extra = ["--cpu-launcher-args", f"--ncores-per-instance {cores_each}"] if cores_each else []
        with Served(tiny, "--grpc-address", f"127.0.0.1:{ours_port}", "--grpc-processes", str(processes),
                    *extra) as server:
            frontend = psutil.Process(server.proc.pid)
            for clients in clients_list:
                ours[way, clients] = frontend_cost(frontend, lambda: closed_loop_grpc(
                    f"127.0.0.1:{ours_port}", body, level, args.seconds, clients), relays_of(frontend))
                print(f"launchkit Predictions, {way_name(way)}, {clients} client(s): "
                      f"{ours[way, clients]['req/s']:.0f} req/s", file=sys.stderr, flush=True)
    theirs: dict[int, dict] = {}
    if not args.no_torchserve:
        ts_inference, ts_management = free_ports(2)
        try:
            with TorchServe([tiny], config={"grpc_inference_port": str(ts_inference),
                                            "grpc_management_port": str(ts_management)}):
                for clients in clients_list:
                    theirs[clients] = closed_loop_grpc(f"127.0.0.1:{ts_inference}", body, level, args.seconds, clients)
        except PeerUnavailable as error:
            print(f"TorchServe unavailable: {error}", file=sys.stderr)
            data["torchserve_unavailable"] = str(error)
    for clients in clients_list:
        load = f"{clients} client process{'es' if clients > 1 else ''}"
        peer = theirs.get(clients)
        data["predictions"][load] = {"torchserve": peer, **{
            f"launchkit, {way_name(way)}": ours[way, clients] for way in ways}}
        named = [(f"launchkit, {way_name(way)}", ours[way, clients]) for way in ways]
        for name, figures in named + [("TorchServe 0.12", peer)]:
            if figures is None:
                continue
            relays = figures.get("relays cores", 0.0)
            rows.append([name, f"gRPC Predictions (inference.proto), grpc.aio, {load}", level,
                         f"{figures['req/s']:,.0f}", f"{figures['p50 ms']:.2f}", f"{figures['p99 ms']:.2f}",
                         f"{figures['client cores']:.2f}",
                         f"{figures['frontend cores']:.2f}" if "frontend cores" in figures else "-",
                         f"{figures['frontend µs/call']:.0f}" if "frontend cores" in figures else "-",
                         f"{relays:.2f}" if relays else "-", f"{figures['relays µs/call']:.0f}" if relays else "-",
                         f"{figures['workers cores']:.2f}" if "workers cores" in figures else "-",
                         f"{figures['workers µs/call']:.0f}" if "workers cores" in figures else "-",
                         figures["errors"]])
        for way in ways:
            figures = ours[way, clients]
            checks.append(relative(f"tiny, batch 1, one worker, {cores} cores, c={level}, {load}, "
                                   f"{way_name(way)}", "gRPC Predictions req/s",
                                   figures["req/s"], peer["req/s"] if peer else None, 3.0, higher=True,
                                   errors=figures["errors"] + (peer["errors"] if peer else 0),
                                   peer_name="TorchServe 0.12 gRPC Predictions (live)"))
    return rows


if __name__ == "__main__":
    sys.exit(main())
