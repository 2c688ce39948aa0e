"""`launchkit serve`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from launchkit.cli.options import CONTEXT, option


@click.command(context_settings=CONTEXT)
@click.argument("model_paths", nargs=-1, metavar="[MODEL.mar]...")
@option("--model-store", metavar="DIR", help="Folder of .mar files (--models NAME=FILE is relative to it).")
@option("--models", multiple=True, metavar="[NAME=]FILE|all",
        help="Models to load, as in TorchServe; repeatable or comma-separated.")
@option("--ts-config", metavar="FILE", help="TorchServe config.properties.")
@option("--inference-address", metavar="URL", help="Default http://127.0.0.1:8080.")
@option("--management-address", metavar="URL",
        help="Default http://127.0.0.1:8081. Beyond loopback it needs LAUNCHKIT_MANAGEMENT_TOKEN.")
@option("--metrics-address", metavar="URL", help="Prometheus /metrics; default http://127.0.0.1:8082.")
@option("--grpc-address", metavar="HOST:PORT",
        help="Also serve inference over gRPC here, e.g. 127.0.0.1:8001 (Triton's port): the Open Inference "
             "Protocol (tritonclient.grpc, perf_analyzer -i grpc, KServe's gRPC client) and TorchServe's "
             "inference.proto. Default: off.")
@option("--grpc-management-address", metavar="HOST:PORT",
        help="Also serve TorchServe's gRPC management API (management.proto) here, e.g. 127.0.0.1:7071. "
             "Default: off; beyond loopback it needs LAUNCHKIT_MANAGEMENT_TOKEN.")
@option("--grpc-processes", type=click.IntRange(min=0), metavar="N",
        help="Processes that run the gRPC server and hand each call to the frontend, so gRPC's own cost "
             "runs on cores of its own (default 1; more share the port; 0: on the frontend's event loop).")
@option("--workers", type=click.IntRange(min=1), help="Workers per model (default 1; each gets its own cores).")
@option("--batch-size", type=click.IntRange(min=1), help="Largest batch per model (default 1).")
@option("--max-batch-delay", type=click.FloatRange(min=0), metavar="MS",
        help="Longest a request waits for batch-mates, from its arrival (default 100 ms).")
@option("--streams", type=click.IntRange(min=1),
        help="Batches each worker runs at once, each on its share of the worker's cores, one copy of the "
             "weights (default 1; for traced/frozen/compiled models).")
@option("--cpu-launcher-args", metavar="ARGS", help="launchkit run flags for the workers, e.g. '--use-logical-core'.")
@option("--optimization", metavar="SPEC",
        help="How workers run every model: e.g. 'bf16,channels_last,torchscript' (dtype fp32|bf16|int8, "
             "channels_last, graph torchscript|compile|none). Beats model-config.yaml; check accuracy with "
             "launchkit optimize first.")
@option("--graceful-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
        help="Seconds to let requests in flight finish on SIGINT/SIGTERM.")
@option("--allow-shared-cores", is_flag=True,
        help="Let workers share cores when there are more workers than cores (each then runs slower; "
             "cpu_launcher_enable=false in config.properties allows it too).")
@option("--start", is_flag=True, help="Run in the background (TorchServe's --start): return once it answers /ping.")
@option("--stop", is_flag=True, help="Stop the server --start started (the one the pid file names).")
@option("--foreground", is_flag=True, help="With --start: stay in the foreground, but write the pid file.")
@option("--pid-file", metavar="FILE", help="Pid file of --start/--stop (default: $TMPDIR/.launchkit_serve.pid).")
@option("--log-dir", metavar="DIR", help="Where --start writes the server's log (default: ./logs, or $LOG_LOCATION).")
@option("--ncs", "--no-config-snapshots", is_flag=True,
        help="Accepted for TorchServe's scripts: launchkit writes no config snapshots.")
@option("--topology-root", metavar="DIR", envvar="LAUNCHKIT_TOPOLOGY_ROOT", hidden=True)
@option("--disable-token-auth", "--dt", is_flag=True, hidden=True)
@option("--enable-model-api", is_flag=True, hidden=True)
def serve(model_paths: tuple[str, ...], **params: Any) -> None:
    """Serve model archives over HTTP with dynamic batching, each worker on its own cores.

    With no MODEL it serves the bundled examples (tiny, resnet18); with --model-store alone it starts
    with no model (register them with POST /models; --models all loads every archive of the store).
    Runs in the foreground until
    SIGINT/SIGTERM, then finishes requests in flight and stops its workers. Settings apply in one
    order (docs/serving.md, "Settings"): defaults < config.properties < the archive's model-config.yaml
    < these flags < the management API.

    \b
    Examples:
      launchkit serve                                   # bundled examples on :8080
      launchkit serve tiny.mar --batch-size 8 --max-batch-delay 5
      launchkit serve --model-store store --models tiny=tiny.mar --ts-config config.properties
      launchkit serve --start --model-store store --ts-config config.properties; launchkit serve --stop
    """
    from launchkit.model.spec import parse_spec
    from launchkit.serve import daemon
    from launchkit.serve.loading import resolve_sources
    from launchkit.serve.server import ServeRequest, run_server
    from launchkit.serve.settings import ModelOverrides, ServerFlags, server_config

    pid_file = Path(params["pid_file"]) if params["pid_file"] else daemon.default_pid_file()
    if params["stop"]:
        stopped = daemon.stop(pid_file, params["graceful_timeout"] + 10)
        click.echo(f"launchkit serve (pid {stopped}) has stopped." if stopped else
                   f"launchkit serve is not running (no live server in {pid_file}).")
        return
    config = server_config(ServerFlags(
        ts_config=params["ts_config"], model_store=params["model_store"],
        inference_address=params["inference_address"], management_address=params["management_address"],
        metrics_address=params["metrics_address"], grpc_address=params["grpc_address"],
        grpc_management_address=params["grpc_management_address"], grpc_processes=params["grpc_processes"],
        cpu_launcher_args=params["cpu_launcher_args"],
        allow_shared_cores=params["allow_shared_cores"],
    ))
    if params["start"] and not params["foreground"]:
        argv = sys.argv[sys.argv.index("serve") + 1:] if "serve" in sys.argv else []
        log_dir = Path(params["log_dir"]) if params["log_dir"] else daemon.default_log_dir()
        click.echo(f"launchkit serve: starting in the background (log: {log_dir / daemon.LOG_NAME}) ...", err=True)
        started = daemon.start([arg for arg in argv if arg != "--start"], f"{config.inference_address}/ping",
                               pid_file, log_dir)
        click.echo(f"launchkit serve started (pid {started.pid}); log: {started.log}; stop it with "
                   f"launchkit serve --stop" + (f" --pid-file {pid_file}" if params["pid_file"] else ""))
        return
    models = [item for entry in params["models"] for item in entry.split(",") if item]
    paths = list(model_paths)
    if not paths and not models and not config.load_models and config.model_store is None:
        from launchkit.examples.cache import ensure_examples  # a bare `launchkit serve`: the bundled examples

        paths = [str(path) for path in ensure_examples()]
    optimization = params["optimization"]
    request = ServeRequest(
        config=config,
        sources=tuple(resolve_sources(config, paths, models)),
        overrides=ModelOverrides(params["batch_size"], params["max_batch_delay"], params["workers"],
                                 optimization=parse_spec(optimization, "--optimization") if optimization else None,
                                 streams=params["streams"]),
        graceful_timeout_s=params["graceful_timeout"],
        topology_root=params["topology_root"],
    )
    if params["start"]:  # --start --foreground: this process is the server; the pid file says so
        pid_file.write_text(f"{os.getpid()}\n")
        try:
            sys.exit(run_server(request))
        finally:
            pid_file.unlink(missing_ok=True)
    sys.exit(run_server(request))
