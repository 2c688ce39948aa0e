"""A worker process: loads one model's handler, then runs the batches the frontend sends.

    python -m launchkit.serve.worker --socket S --model-dir D --model-name N --batch-size B --worker-id W

Started by the server as a launcher instance (pinned cores, OMP_NUM_THREADS, allocator). Input
decoding happens here, not in the frontend, so the frontend never spends CPU on model inputs;
an item that cannot be decoded gets its own 400 and the rest of the batch still runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from launchkit.archive.manifest import read_manifest
from launchkit.archive.reading import read_model_config
from launchkit.core.errors import BadRequest
from launchkit.serve.wire import (LOAD_ATTEMPT_ENV, Batch, BatchResult, BlockingChannel, Hello, ItemRequest,
                                  ItemResult, Stop, error_result)
from launchkit.serve.worker.codec import decode_item, encode_output
from launchkit.serve.worker.handler_api import Context, PredictionException, install_ts_shim, load_entry
from launchkit.serve.worker.streams import Streams

logger = logging.getLogger("launchkit.serve.worker")


class Worker:
    def __init__(self, model_dir: Path, model_name: str, batch_size: int, optimization: dict[str, Any] | None = None,
                 handler: str | None = None) -> None:
        install_ts_shim()
        self.manifest_obj = read_manifest(model_dir)
        self.context = Context(model_name, str(model_dir), self.manifest_obj.raw, batch_size,
                               read_model_config(model_dir, self.manifest_obj))
        self.context.optimization = optimization
        os.chdir(model_dir)
        self.handler_name = handler or self.manifest_obj.handler
        self.handle, initialize = load_entry(model_dir, self.handler_name)
        initialize(self.context)

    def replica(self) -> "Worker":
        """The same model for another stream: a copy of the handler object (sharing its model and
        everything else it holds) and a context of its own."""
        twin = copy.copy(self)
        twin.context = self.context.replica()
        owner = getattr(self.handle, "__self__", None)
        if owner is not None:
            twin.handle = getattr(copy.copy(owner), self.handle.__name__)
        return twin

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"handler": self.handler_name}
        torch = sys.modules.get("torch")
        if torch is not None:
            info["torch_threads"] = torch.get_num_threads()
        owner = getattr(self.handle, "__self__", None)
        for key in ("optimization",):
            if owner is not None and hasattr(owner, key):
                info[key] = getattr(owner, key)
        return info

    def run_batch(self, items: list[ItemRequest]) -> tuple[list[ItemResult], dict[str, float], list[Any]]:
        """Results, one per item, the handler's timings (``handle`` and, if known, its stages) and
        the metrics it emitted through ``context.metrics``."""
        self.context.stage_times = {}
        start = time.perf_counter()
        results = self._run_batch(items)
        timings = {"handle": time.perf_counter() - start, **self.context.stage_times}
        return results, timings, self.context.metrics.take_updates()

    def _run_batch(self, items: list[ItemRequest]) -> list[ItemResult]:
        results: list[ItemResult | None] = [None] * len(items)
        data, positions = [], []
        for position, item in enumerate(items):
            try:
                data.append(decode_item(item))
                positions.append(position)
            except BadRequest as error:
                results[position] = error_result(400, "BadRequestException", f"cannot decode the request body: {error}")
            except Exception as error:  # noqa: BLE001 - any input the decoders choke on (e.g. JSON nested 100k deep)
                results[position] = error_result(400, "BadRequestException", "cannot decode the request body: "
                                                 f"{type(error).__name__}: {str(error)[:200]}")
        if data:
            self.context.start_batch([items[p].request_id for p in positions],
                                     [dict(items[p].headers) for p in positions])
            try:
                outputs = self.handle(data, self.context)
            except PredictionException as error:
                return [error_result(error.error_code, "PredictionException", error.message)] * len(items)
            except Exception as error:  # noqa: BLE001 - a handler may raise anything
                logger.exception("the handler failed on a batch of %d", len(data))
                return [error_result(500, "InternalServerException", f"handler failed: {type(error).__name__}: {error}")] * len(items)
            if not isinstance(outputs, list) or len(outputs) != len(data):
                count = len(outputs) if isinstance(outputs, list) else type(outputs).__name__
                message = (f"handler returned {count} outputs for a batch of {len(data)} requests; "
                           "handle() must return a list with one output per request")
                return [error_result(500, "InternalServerException", message)] * len(items)
            for index, (position, output) in enumerate(zip(positions, outputs)):
                status, _phrase = self.context.get_response_status(index)
                try:
                    content_type, body = encode_output(output)
                except (TypeError, ValueError, RecursionError) as error:
                    results[position] = error_result(500, "InternalServerException",
                                                     f"the handler's output cannot be encoded: {str(error)[:200]}")
                    continue
                content_type = self.context.get_response_content_type(index) or content_type
                headers = list(self.context.get_response_headers(index).items())
                results[position] = ItemResult(status, content_type, body, headers)
        return [result for result in results if result is not None]


def release_free_memory() -> None:
    """Give the allocator's free pages back to the OS after loading. Loading and tracing (state
    dict, eager copy, activations) leave tens of MiB free but resident, and the eager model is
    only freed by the cycle collector (a resnet18 worker holds tens of MiB less after it). tcmalloc's
    MallocExtension_ReleaseFreeMemory when it is preloaded, glibc's malloc_trim otherwise."""
    import ctypes
    import gc

    gc.collect()
    process = ctypes.CDLL(None)
    for name, args in (("MallocExtension_ReleaseFreeMemory", ()), ("malloc_trim", (0,))):
        function = getattr(process, name, None)
        if function is not None:
            function(*args)
            return


def _whole(body: Any) -> Any:
    """An out-of-band body arrives as a read-only view of the bytearray it was read into: hand the
    handler that bytearray (what TorchServe hands over too), not the view."""
    if isinstance(body, memoryview):
        owner = body.obj
        return owner if isinstance(owner, bytearray) and len(owner) == body.nbytes else bytes(body)
    return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="launchkit.serve.worker")
    parser.add_argument("--fd", type=int, required=True, help="the inherited end of the frontend's socketpair")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--optimization", help="JSON of the OptimizationSpec the server settled on")
    parser.add_argument("--handler", help="the handler to run, when not the manifest's (handler= at registration)")
    parser.add_argument("--streams", type=int, default=1, help="batches run at once, each on its share of the cores")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format=f"launchkit worker {args.worker_id}: %(message)s")
    channel = BlockingChannel(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=args.fd))
    try:
        worker = Worker(Path(args.model_dir), args.model_name, args.batch_size,
                        json.loads(args.optimization) if args.optimization else None, args.handler)
    except Exception as error:  # noqa: BLE001 - report any load failure to the frontend
        if os.environ.get(LOAD_ATTEMPT_ENV, "1") == "1":  # the whole traceback once; retries say one line
            logger.exception("the model could not be loaded")
        else:
            logger.error("the model could not be loaded (attempt %s): %s: %s", os.environ[LOAD_ATTEMPT_ENV],
                         type(error).__name__, error)
        channel.send(Hello("failed", args.worker_id, os.getpid(), f"{type(error).__name__}: {error}"))
        return 1
    release_free_memory()
    info = worker.info()
    streams = Streams(worker, args.streams, channel.send) if args.streams > 1 else None
    if streams is not None:
        info["streams"] = streams.describe()
        logger.info("%d streams on CPUs %s", len(streams.pools), "; ".join(
            ",".join(map(str, pool.core_ids)) for pool in streams.pools))
    if info.get("optimization"):
        logger.info("%s", info["optimization"])
    channel.send(Hello("ready", args.worker_id, os.getpid(), info))
    while True:
        message = channel.receive()
        if message is None or isinstance(message, Stop):
            return 0
        if isinstance(message, Batch):
            batch_id = message.batch_id
            items = [item._replace(body=_whole(item.body)) for item in message.items]
            if streams is not None:
                streams.submit(batch_id, items)
                continue
            try:
                results, timings, updates = worker.run_batch(items)
            except Exception as error:  # noqa: BLE001 - whatever goes wrong, the worker stays up for the next batch
                logger.exception("a batch failed outside the handler")
                message_text = f"the worker could not run the batch: {type(error).__name__}: {str(error)[:200]}"
                results, timings, updates = [error_result(500, "InternalServerException", message_text)] * len(items), {}, []
            channel.send(BatchResult("result", batch_id, results, timings, updates))

