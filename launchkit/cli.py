"""The `launchkit` command: parses flags, calls one function per command, prints.

Human output goes to stderr through rich; ``--json`` prints machine-readable JSON on stdout
and nothing else there. Errors become ``launchkit: error: ...`` and a non-zero exit status
(2 for bad usage and impossible plans).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from launchkit import __version__
from launchkit.launch.options import ALIASES_EPILOG, apply_profile, launch_options, option, run_request
from launchkit.errors import LaunchkitError, UsageError
from launchkit.launch.runplan import ProgramSpec, RunPlan, check_program
from launchkit.topology import TopologyError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Group(click.Group):
    """Turns launchkit's exceptions into one clear line and an exit status, without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (LaunchkitError, TopologyError) as error:
            click.echo(f"launchkit: error: {error}", err=True)
            sys.exit(getattr(error, "exit_code", 1))


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="launchkit")
def main() -> None:
    """Fast, measurable PyTorch inference on CPUs.

    \b
      launchkit info                 what this machine is and what this process may use
      launchkit run ... script.py    launch pinned, tuned instances of a program
      launchkit archive ...          make a model archive (.mar), like torch-model-archiver
      launchkit serve [MODEL.mar]    serve models with dynamic batching on pinned workers
      launchkit bench [TARGET]       load-test a server, write a report, gate CI on regressions
      launchkit optimize [MODEL]     bf16 / channels-last / TorchScript / int8, measured and accuracy-checked
    """


@main.command(context_settings=CONTEXT)
@option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@option("--topology-root", metavar="DIR", envvar="LAUNCHKIT_TOPOLOGY_ROOT",
        help="Describe a recorded machine: a directory holding sys/ and proc/ (default /).")
def info(as_json: bool, topology_root: str | None) -> None:
    """Sockets, NUMA nodes, cores, what this process may use, ISA and tuning libraries."""
    from launchkit.launch.machine import machine_report
    from launchkit.launch.render import render_machine

    report = machine_report(topology_root)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        render_machine(report)


@main.command(
    context_settings={**CONTEXT, "allow_interspersed_args": False},
    epilog=ALIASES_EPILOG,
)
@launch_options
@option("--log-path", "--log-dir", metavar="DIR",
        help="Write <prefix>.<i>.out.log / .err.log per instance and <prefix>.summary.json here.")
@option("--log-file-prefix", default="run", show_default=True, help="File name prefix of the logs.")
@option("--on-failure", type=click.Choice(["kill-all", "wait"]), default="kill-all", show_default=True,
        help="When an instance fails: stop the others, or let them finish.")
@option("--grace-period", type=click.FloatRange(min=0), default=5.0, show_default=True,
        help="Seconds between forwarding a signal and SIGKILL.")
@click.option("-m", "--module", is_flag=True, help="PROGRAM is a Python module (python -m PROGRAM).")
@option("--no-python", is_flag=True, help="PROGRAM is an executable, not a Python script.")
@option("--dry-run", is_flag=True, help="Print the plan (CPUs, memory nodes, environment, argv) and exit.")
@option("--json", "as_json", is_flag=True, help="With --dry-run: print the plan as JSON on stdout.")
@click.argument("program", required=False)
@click.argument("program_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, **params: Any) -> None:
    """Launch PROGRAM as one or more instances, each pinned to its own cores.

    Each instance gets CPU affinity set before exec, memory bound to its NUMA nodes (numactl,
    when a probe shows it works), OMP_NUM_THREADS equal to its CPUs, Intel or GNU OpenMP
    settings, tcmalloc/jemalloc preloaded, and LAUNCHKIT_INSTANCE_ID / LAUNCHKIT_NUM_INSTANCES /
    LAUNCHKIT_CPUS. Everything after PROGRAM goes to the program. The exit status is 0 only if
    every instance exits 0.

    \b
    Examples:
      launchkit run --ninstances 2 --node-id 0 infer.py --batch 8
      launchkit run --profile single-core --dry-run infer.py
      launchkit run --core-list 0-3 --no-python -- ./bench --threads 4
    """
    from launchkit.launch.launcher import plan_run
    from launchkit.launch.supervise import SupervisorOptions, supervise

    params = apply_profile(ctx, params, "run")
    if not params["program"]:
        raise UsageError("no PROGRAM given: launchkit run [OPTIONS] [--] PROGRAM [ARGS]... (see --help)")
    if params["as_json"] and not params["dry_run"]:
        raise UsageError("--json prints the plan; use it with --dry-run")
    program = ProgramSpec(params["program"], tuple(params["program_args"]), params["module"], params["no_python"])
    request = run_request(params, program)
    _topology, plan = plan_run(request)
    if params["dry_run"]:
        _print_plan(plan, params["as_json"])
        return
    check_program(program)
    for warning in plan.warnings:
        click.echo(f"launchkit: warning: {warning}", err=True)
    result = supervise(
        plan,
        SupervisorOptions(
            log_dir=params["log_path"],
            log_prefix=params["log_file_prefix"],
            on_failure=params["on_failure"],
            grace_period=params["grace_period"],
        ),
    )
    if result.exit_code != 0 and len(result.instances) > 1:
        click.echo("launchkit: instance report:", err=True)
        for instance in result.instances:
            click.echo(f"  {instance.describe()}", err=True)
    sys.exit(result.exit_code)


@main.command(context_settings=CONTEXT)
@click.argument("model_paths", nargs=-1, metavar="[MODEL.mar]...")
@option("--model-store", metavar="DIR", help="Folder of .mar files (--models NAME=FILE is relative to it).")
@option("--models", multiple=True, metavar="[NAME=]FILE|all",
        help="Models to load, as in TorchServe; repeatable or comma-separated.")
@option("--ts-config", metavar="FILE", help="TorchServe config.properties.")
@option("--inference-address", metavar="URL", help="Default http://127.0.0.1:8080.")
@option("--management-address", metavar="URL",
        help="Default http://127.0.0.1:8081. Beyond loopback it needs LAUNCHKIT_MANAGEMENT_TOKEN.")
@option("--metrics-address", metavar="URL", help="Prometheus /metrics; default http://127.0.0.1:8082.")
@option("--workers", type=click.IntRange(min=1), help="Workers per model (default 1; each gets its own cores).")
@option("--batch-size", type=click.IntRange(min=1), help="Largest batch per model (default 1).")
@option("--max-batch-delay", type=click.FloatRange(min=0), metavar="MS",
        help="Longest a request waits for batch-mates, from its arrival (default 100 ms).")
@option("--cpu-launcher-args", metavar="ARGS", help="launchkit run flags for the workers, e.g. '--use-logical-core'.")
@option("--optimization", metavar="SPEC",
        help="How workers run every model: e.g. 'bf16,channels_last,torchscript' (dtype fp32|bf16|int8, "
             "channels_last, graph torchscript|compile|none). Beats model-config.yaml; check accuracy with "
             "launchkit optimize first.")
@option("--graceful-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
        help="Seconds to let requests in flight finish on SIGINT/SIGTERM.")
@option("--topology-root", metavar="DIR", envvar="LAUNCHKIT_TOPOLOGY_ROOT", hidden=True)
@option("--foreground", is_flag=True, hidden=True)
@option("--disable-token-auth", "--dt", is_flag=True, hidden=True)
@option("--ncs", "--no-config-snapshots", is_flag=True, hidden=True)
@option("--enable-model-api", is_flag=True, hidden=True)
def serve(model_paths: tuple[str, ...], **params: Any) -> None:
    """Serve model archives over HTTP with dynamic batching, each worker on its own cores.

    With no MODEL it serves the bundled examples (tiny, resnet18). Runs in the foreground until
    SIGINT/SIGTERM, then finishes requests in flight and stops its workers.

    \b
    Examples:
      launchkit serve                                   # bundled examples on :8080
      launchkit serve tiny.mar --batch-size 8 --max-batch-delay 5
      launchkit serve --model-store store --models tiny=tiny.mar --ts-config config.properties
    """
    from dataclasses import replace

    from launchkit.serve.config import load_config, parse_address
    from launchkit.serve.loading import SettingOverrides, resolve_sources
    from launchkit.serve.server import ServeRequest, run_server

    config = load_config(params["ts_config"])
    if params["model_store"]:
        config = replace(config, model_store=Path(params["model_store"]))
    for key in ("inference_address", "management_address", "metrics_address"):
        if params[key]:
            config = replace(config, **{key: parse_address(params[key], "--" + key.replace("_", "-"))})
    if params["cpu_launcher_args"] is not None:
        config = replace(config, cpu_launcher_args=params["cpu_launcher_args"])
    models = [item for entry in params["models"] for item in entry.split(",") if item]
    paths = list(model_paths)
    if not paths and not models and not config.load_models:
        from launchkit.examples_cache import ensure_examples

        paths = [str(path) for path in ensure_examples()]
    request = ServeRequest(
        config=config,
        sources=tuple(resolve_sources(config, paths, models)),
        overrides=SettingOverrides(params["batch_size"], params["max_batch_delay"], params["workers"],
                                   optimization=_optimization(params["optimization"])),
        graceful_timeout_s=params["graceful_timeout"],
        topology_root=params["topology_root"],
    )
    sys.exit(run_server(request))


def _optimization(value: str | None) -> Any:
    if value is None:
        return None
    from launchkit.optimize.spec import SpecError, parse_spec

    try:
        return parse_spec(value, "--optimization")
    except SpecError as error:
        raise UsageError(str(error)) from None


@main.command(context_settings=CONTEXT)
@option("--model-name", help="Name of the model (and of the .mar).")
@click.option("-v", "--version", "version", help="Model version, e.g. 1.0.")
@option("--serialized-file", metavar="FILE", help="TorchScript .pt, or state dict for --model-file.")
@option("--model-file", metavar="FILE", help="Python file with exactly one nn.Module class (eager mode).")
@option("--handler", metavar="FILE[:FUNCTION]", help="Handler .py file (TorchServe contract).")
@option("--extra-files", metavar="A,B,...", help="More files or folders to include, comma-separated.")
@option("--export-path", default=".", show_default=True, metavar="DIR", help="Where to write the archive.")
@click.option("-c", "--config-file", "config_file", metavar="FILE", help="model-config.yaml (batchSize, ...).")
@click.option("-r", "--requirements-file", "requirements_file", metavar="FILE", help="requirements.txt to include.")
@option("--archive-format", type=click.Choice(["default", "zip-store", "no-archive"]), default="default",
        show_default=True)
@option("--runtime", default="python", hidden=True)
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing archive.")
@option("--example", type=click.Choice(["tiny", "resnet18", "minilm"]), help="Build a bundled example instead.")
def archive(**params: Any) -> None:
    """Make a model archive (.mar) with torch-model-archiver's flags and layout."""
    if params["example"]:
        from launchkit.examples.build import build_example

        click.echo(build_example(params["example"], params["export_path"], force=True))
        return
    from launchkit.serve.archive import ArchiveRequest, create_archive

    missing = [flag for flag, key in (("--model-name", "model_name"), ("--version", "version"), ("--handler", "handler"))
               if not params[key]]
    if missing:
        raise UsageError(f"missing {', '.join(missing)} (or use --example tiny|resnet18|minilm)")
    extra = tuple(item for item in (params["extra_files"] or "").split(",") if item)
    path = create_archive(ArchiveRequest(
        model_name=params["model_name"], version=params["version"], handler=params["handler"],
        serialized_file=params["serialized_file"], model_file=params["model_file"], extra_files=extra,
        export_path=params["export_path"], config_file=params["config_file"],
        requirements_file=params["requirements_file"], archive_format=params["archive_format"],
        force=params["force"], runtime=params["runtime"],
    ))
    click.echo(path)


def _print_plan(plan: RunPlan, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(plan.to_dict(), indent=2))
    else:
        from launchkit.launch.render import render_plan

        render_plan(plan)


def _register() -> None:
    from launchkit.cli_bench import bench, report
    from launchkit.cli_optimize import optimize

    main.add_command(bench)
    main.add_command(report)
    main.add_command(optimize)


_register()

if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))
