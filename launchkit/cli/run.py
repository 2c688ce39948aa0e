"""`launchkit run`."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from launchkit.cli.options import CONTEXT, launch_options, option
from launchkit.core.errors import PlanError, UsageError
from launchkit.launch.flags import ALIASES_HELP, merge_profile, run_request
from launchkit.launch.runplan import ProgramSpec, RunPlan, check_program
from launchkit.launch.supervise import OnFailure


@click.command(context_settings={**CONTEXT, "allow_interspersed_args": False}, epilog=ALIASES_HELP)
@launch_options
@option("--log-path", "--log-dir", metavar="DIR",
        help="Write <prefix>.<i>.out.log / .err.log per instance and <prefix>.summary.json here.")
@option("--log-file-prefix", default="run", show_default=True, help="File name prefix of the logs.")
@option("--on-failure", type=click.Choice([kind.value for kind in OnFailure]), default="kill-all", show_default=True,
        help="When an instance fails: stop the others, or let them finish.")
@option("--grace-period", type=click.FloatRange(min=0), default=5.0, show_default=True,
        help="Seconds between forwarding a signal and SIGKILL.")
@option("--nnodes", metavar="N|MIN:MAX", help="torchrun: nodes of the job. With --nproc-per-node, the ranks are "
        "started by torchrun's agent (its rendezvous, restarts and RANK/WORLD_SIZE/...), each local rank "
        "pinned to its own cores like an instance.")
@option("--nproc-per-node", type=int, metavar="K", help="torchrun: local ranks on this node (default 1).")
@option("--rdzv-endpoint", metavar="HOST:PORT", help="torchrun: where the nodes meet (the same on every node).")
@option("--rdzv-backend", default="c10d", show_default=True, help="torchrun: rendezvous backend.")
@option("--rdzv-id", default="none", show_default=True, help="torchrun: the job's id (the same on every node).")
@option("--node-rank", type=click.IntRange(min=0), help="torchrun: this node's rank (static rendezvous).")
@option("--max-restarts", type=click.IntRange(min=0), default=0, show_default=True,
        help="torchrun: restarts of the worker group before the job fails.")
@option("--ccl-worker-count", type=click.IntRange(min=0), default=0, show_default=True,
        help="With torchrun: CPUs per rank reserved for oneCCL's workers (CCL_WORKER_COUNT/CCL_WORKER_AFFINITY), "
             "when oneccl_bindings_for_pytorch is importable.")
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
    from launchkit.launch.request import plan_run
    from launchkit.launch.supervise import SupervisorOptions, supervise

    params = merge_profile(ctx, params, "run")
    if not params["program"]:
        raise UsageError("no PROGRAM given: launchkit run [OPTIONS] [--] PROGRAM [ARGS]... (see --help)")
    if params["as_json"] and not params["dry_run"]:
        raise UsageError("--json prints the plan; use it with --dry-run")
    program = ProgramSpec(params["program"], tuple(params["program_args"]), params["module"], params["no_python"])
    if params["nnodes"] is not None or params["nproc_per_node"] is not None:
        _run_distributed(params, program)
        return
    request = run_request(params, program)
    _topology, plan = plan_run(request)
    if params["dry_run"]:
        _print_plan(plan, params["as_json"])
        return
    check_program(program)
    if params["log_path"]:
        from launchkit.core.results import writable_folder

        writable_folder(params["log_path"], "--log-path")  # before any instance starts
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


def _run_distributed(params: dict[str, Any], program: ProgramSpec) -> None:
    """--nnodes/--nproc-per-node: the local ranks planned here, started by torchrun's agent."""
    from launchkit.launch.distributed import (RendezvousOptions, ccl_available, plan_distributed, run_distributed,
                                              torch_available)
    from launchkit.launch.request import plan_run

    rendezvous = RendezvousOptions(
        nnodes=params["nnodes"] or "1", nproc_per_node=params["nproc_per_node"] or 1,
        rdzv_endpoint=params["rdzv_endpoint"], rdzv_backend=params["rdzv_backend"], rdzv_id=params["rdzv_id"],
        node_rank=params["node_rank"], max_restarts=params["max_restarts"],
        ccl_worker_count=params["ccl_worker_count"])
    rendezvous.check()
    if params["ninstances"] not in (None, rendezvous.nproc_per_node) or params["rank"]:
        raise UsageError("with torchrun's flags the local ranks are the instances: give --nproc-per-node, not "
                         "--ninstances/--rank")
    request = run_request({**params, "ninstances": rendezvous.nproc_per_node}, program)
    try:
        _topology, plan = plan_run(request)
    except PlanError as error:  # the planner speaks of instances: here they are local ranks
        raise PlanError(str(error).replace("--ninstances", "--nproc-per-node").replace("instances", "local ranks")
                        ) from None
    distributed = plan_distributed(plan, rendezvous, ccl_available=bool(rendezvous.ccl_worker_count) and ccl_available(),
                                   log_dir=params["log_path"], log_prefix=params["log_file_prefix"])
    if params["dry_run"]:
        if params["as_json"]:
            click.echo(json.dumps(distributed.to_dict(), indent=2))
        else:
            from launchkit.cli.render import render_plan

            render_plan(distributed.plan)
            click.echo(f"local ranks started by torchrun's agent: {' '.join(distributed.to_dict()['agent_argv'])}")
        return
    check_program(program)
    if not torch_available():
        raise UsageError(f"--nnodes/--nproc-per-node start torchrun's agent (torch.distributed.run), which comes "
                         f"with torch; torch is not installed for {sys.executable}")
    if params["log_path"]:
        from launchkit.core.results import writable_folder

        writable_folder(params["log_path"], "--log-path")
    for warning in distributed.plan.warnings:
        click.echo(f"launchkit: warning: {warning}", err=True)
    sys.exit(run_distributed(distributed, params["grace_period"]))


def _print_plan(plan: RunPlan, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(plan.to_dict(), indent=2))
    else:
        from launchkit.cli.render import render_plan

        render_plan(plan)
