"""The launcher's flags, declared once as data, and turned into a RunRequest.

They live in ``launch`` (not in the CLI) because the server parses the same flags from
``cpu_launcher_args`` (config.properties) with :func:`parse_launcher_args`; the CLI decorates
``launchkit run`` and ``launchkit serve`` with them (``launchkit.cli.options``).

Each flag accepts its dash and underscore spelling and the spelling of the other anchor
(run_cpu's ``--core-list`` and ipexrun's ``--cores-list`` ...).
"""

from __future__ import annotations

from typing import Any

import click

from launchkit.core.cpulist import parse_cpu_list
from launchkit.core.errors import UsageError
from launchkit.core.profiles import load_profile
from launchkit.launch.domains import CacheDomains
from launchkit.launch.cpu_options import CoreTypes, CpuOptions, Leftover
from launchkit.launch.env import Allocator, OmpRuntime, WaitPolicy
from launchkit.launch.request import RunRequest
from launchkit.launch.runplan import BindingOptions, ProgramSpec

ALIASES_HELP = (
    "Every flag also accepts its underscore spelling (--node_id). Accepted anchor spellings: "
    "--nodes-list (--node-id), --cores-list (--core-list), --use-logical-cores, --instance-idx "
    "(--rank), --log-dir (--log-path), --bind-numa-node (--skip-cross-node-cores), --use-e-cores, "
    "--multi-task-manager, --multi-instance."
)

# (spellings, click keyword arguments); "dest" names the parameter when the first spelling does not.
LAUNCH_FLAGS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--ninstances",), dict(type=int, help="Number of instances (default: 1, or derived from the mode).")),
    (("--ncores-per-instance", "--cores-per-instance"), dict(
        type=int, help="Physical cores per instance (with --use-logical-core each brings all its threads).")),
    (("--node-id", "--nodes-list"), dict(dest="node_id", metavar="IDS",
                                         help="NUMA node(s) to run on, e.g. 0 or 0,2-3 (-1: all).")),
    (("--core-list", "--cores-list"), dict(metavar="CPUS",
                                           help="Exact CPU ids to use, e.g. 0-3,8; must be CPUs this process may use.")),
    (("--use-logical-core", "--use-logical-cores"), dict(
        is_flag=True, help="Use every hardware thread (siblings stay in one instance).")),
    (("--latency-mode",), dict(is_flag=True, help="4 physical cores per instance, no instance spans nodes.")),
    (("--throughput-mode",), dict(is_flag=True, help="One instance per NUMA node over all its physical cores.")),
    (("--multi-instance",), dict(is_flag=True, hidden=True)),
    (("--skip-cross-node-cores", "--bind-numa-node"), dict(
        is_flag=True, help="No instance spans NUMA nodes; instances are shared out among nodes by size.")),
    (("--rank", "--instance-idx"), dict(metavar="IDS", help="Run only these instances of the split, e.g. 0 or 1,3 "
                                                            "(-1: all).")),
    (("--core-types",), dict(type=click.Choice([kind.value for kind in CoreTypes]), default="auto",
                             show_default=True, help="On hybrid CPUs: auto uses P-cores only.")),
    (("--use-e-cores",), dict(is_flag=True, hidden=True)),
    (("--leftover",), dict(type=click.Choice([kind.value for kind in Leftover]), default="spread", show_default=True,
                           help="With --ninstances alone: spread the remainder cores or leave them idle.")),
    (("--cache-domains",), dict(type=click.Choice([kind.value for kind in CacheDomains]), default="pack", show_default=True,
                                help="pack: instances fill cores in (node, L3) order and none idles, so a size "
                                     "that does not divide an L3 domain spans two; whole: no instance takes part "
                                     "of an L3 domain with another (the rest idles). --dry-run names spanning "
                                     "instances.")),
    (("--memory-allocator",), dict(type=click.Choice([kind.value for kind in Allocator]), default="auto",
                                   show_default=True, help="auto: tcmalloc, else jemalloc, else the C library.")),
    (("--enable-tcmalloc",), dict(is_flag=True, help="Same as --memory-allocator tcmalloc.")),
    (("--enable-jemalloc",), dict(is_flag=True, help="Same as --memory-allocator jemalloc.")),
    (("--use-default-allocator",), dict(is_flag=True, help="Same as --memory-allocator default.")),
    (("--omp-runtime",), dict(type=click.Choice([kind.value for kind in OmpRuntime] + ["default"]), default="auto",
                              show_default=True, help="auto: Intel OpenMP (libiomp5) when found on x86, else GNU.")),
    (("--disable-iomp",), dict(is_flag=True, help="Same as --omp-runtime gnu.")),
    (("--omp-wait",), dict(type=click.Choice(["auto"] + [kind.value for kind in WaitPolicy]), default="auto", show_default=True,
                           help="OpenMP threads between parallel regions: spin (the runtime's default spin, "
                                "run's default), brief (spin ~10,000 turns, then sleep) or passive (sleep at once). "
                                "auto in serve: brief for a model under 8 MiB, spin for a larger one.")),
    (("--mem-policy",), dict(type=click.Choice(["bind", "preferred", "interleave", "none"]), default="bind",
                             show_default=True, help="numactl memory policy for each instance's NUMA nodes.")),
    (("--disable-numactl",), dict(is_flag=True, help="Do not bind memory with numactl.")),
    (("--disable-taskset",), dict(is_flag=True, help="Do not pin CPUs (only OpenMP settings confine threads).")),
    (("--multi-task-manager",), dict(type=click.Choice(["auto", "none", "numactl", "taskset"]), hidden=True)),
    (("--topology-root",), dict(metavar="DIR", envvar="LAUNCHKIT_TOPOLOGY_ROOT",
                                help="Plan for a recorded machine: a directory holding sys/ and proc/ (default /).")),
    (("--profile",), dict(metavar="NAME|FILE",
                          help="Preset from profiles/ (latency, throughput, single-core) or a TOML file.")),
)


def spellings(*names: str) -> list[str]:
    """Each ``--long-name`` with its ``--long_name`` twin, first spelling first."""
    result: list[str] = []
    for name in names:
        for spelling in (name, "--" + name[2:].replace("-", "_")) if name.startswith("--") else (name,):
            if spelling not in result:
                result.append(spelling)
    return result


def declarations(names: tuple[str, ...], kwargs: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """click's declarations and keyword arguments for one entry of :data:`LAUNCH_FLAGS`."""
    options = dict(kwargs)
    dest = options.pop("dest", None)
    return spellings(*names) + ([dest] if dest else []), options


def merge_profile(ctx: click.Context, params: dict[str, Any], section: str) -> dict[str, Any]:
    """Fill parameters the user did not give on the command line from ``--profile``'s ``[section]``."""
    if not params.get("profile"):
        return params
    table = load_profile(params["profile"], section)
    known = {param.name: param for param in ctx.command.params}
    merged = dict(params)
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in known or name == "profile":
            raise UsageError(f"profile {params['profile']!r}: [{section}] has unknown setting {key!r}")
        if ctx.get_parameter_source(name) in (click.core.ParameterSource.DEFAULT, None):
            merged[name] = known[name].type_cast_value(ctx, value)
    return merged


def _id_list(text: str | None, flag: str) -> tuple[int, ...] | None:
    if text is None or text.strip() in ("", "-1"):
        return None
    return parse_cpu_list(text, what=flag)


def _allocator(params: dict[str, Any]) -> str:
    flags = [name for name, on in (("tcmalloc", params["enable_tcmalloc"]), ("jemalloc", params["enable_jemalloc"]),
                                   ("default", params["use_default_allocator"])) if on]
    if len(flags) > 1:
        raise UsageError(f"--enable-tcmalloc/--enable-jemalloc/--use-default-allocator: pick one, not {flags}")
    chosen = params["memory_allocator"]
    if flags:
        if chosen not in ("auto", flags[0]):
            raise UsageError(f"--memory-allocator {chosen} contradicts the flag asking for {flags[0]}")
        chosen = flags[0]
    return chosen


def _positive(value: int | None, flag: str) -> int | None:
    """run_cpu spells "unset" as -1 and ipexrun as 0; both mean: derive it."""
    if value is None or value in (-1, 0):
        return None
    if value < 0:
        raise UsageError(f"{flag} {value}: expected a positive number")
    return value


def run_request(params: dict[str, Any], program: ProgramSpec) -> RunRequest:
    """Turn parsed launcher flags into a RunRequest."""
    throughput = params["throughput_mode"]
    ninstances = _positive(params["ninstances"], "--ninstances")
    ncores = _positive(params["ncores_per_instance"], "--ncores-per-instance")
    if params["multi_instance"] and ninstances is None and ncores is None:
        throughput = True
    omp = params["omp_runtime"]
    omp = "gnu" if omp == "default" or params["disable_iomp"] else omp
    numactl, taskset = not params["disable_numactl"], not params["disable_taskset"]
    manager = params["multi_task_manager"]
    if manager == "none":
        numactl = taskset = False
    elif manager == "taskset":
        numactl = False
    cpu = CpuOptions(
        ninstances=ninstances,
        ncores_per_instance=ncores,
        node_ids=_id_list(params["node_id"], "--node-id"),
        core_list=_id_list(params["core_list"], "--core-list"),
        use_logical_cores=params["use_logical_core"],
        latency_mode=params["latency_mode"],
        throughput_mode=throughput,
        bind_numa_node=params["skip_cross_node_cores"],
        instance_indices=_id_list(params["rank"], "--rank"),
        core_types=CoreTypes.ALL if params["use_e_cores"] else params["core_types"],
        leftover=params["leftover"],
        cache_domains=params["cache_domains"],
    )
    return RunRequest(
        omp_wait=params["omp_wait"],
        program=program,
        cpu=cpu,
        allocator=_allocator(params),
        omp_runtime=omp,
        binding=BindingOptions(cpu_affinity=taskset, numactl=numactl, mem_policy=params["mem_policy"]),
        topology_root=params["topology_root"],
    )


def parse_launcher_args(args: list[str], program: ProgramSpec) -> RunRequest:
    """Parse launcher flags given as a list (``cpu_launcher_args``) into a RunRequest."""
    options: list[click.Parameter] = []
    for names, kwargs in LAUNCH_FLAGS:
        spelled, attributes = declarations(names, kwargs)
        options.append(click.Option(spelled, **attributes))
    command = click.Command("cpu_launcher_args", params=options, context_settings={"help_option_names": []})
    try:
        with command.make_context("cpu_launcher_args", list(args)) as ctx:
            params = merge_profile(ctx, ctx.params, "run")
    except click.ClickException as error:
        raise UsageError(f"cpu_launcher_args {' '.join(args)!r}: {error.format_message()}") from None
    return run_request(params, program)
