"""A tune run: resolve the target, prepare the optimization variants, search, keep every trial.

Every finished trial is appended to ``trials.jsonl`` in the report folder at once, so an
interrupted run (Ctrl-C, SIGTERM, the time limit) loses at most the trial being measured, and
``--resume DIR`` continues from what that file holds (its trials are judged again under the
constraints given now, so a resumed run may also change the budget).
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from launchkit.archive.manifest import read_manifest
from launchkit.archive.reading import model_config_of
from launchkit.bench.inputs import load_payloads
from launchkit.core.errors import LaunchkitError, UsageError
from launchkit.core.signals import Interrupted, handling, raise_interrupted
from launchkit.examples.targets import archive_named, example_choices
from launchkit.serve.settings import ModelSettings
from launchkit.tune.measure import MeasureSettings, Servers, confirm_trial, measure_trial, trial_line
from launchkit.tune.search import BruteSearch, Constraints, QuickSearch, Trial, best_of, judge, next_to_confirm
from launchkit.tune.space import (KNOBS, SearchSpace, ServingConfig, default_space, parse_knobs, parse_space,
                                  seed_points, start_point)

logger = logging.getLogger(__name__)

CONFIRMED = 2  # leaders measured again after the search
Status = Callable[[str], None]


@dataclass(frozen=True)
class TuneRequest:
    target: str | None  # a .mar, a bundled example's name, or None (tiny)
    constraints: Constraints
    mode: str = "quick"
    space: str = ""  # --space
    max_time_s: float = 600.0
    measure: MeasureSettings = MeasureSettings()
    inputs: tuple[str, ...] = ()
    content_type: str | None = None
    cpus: int | None = None  # usable physical cores (None: this machine's)


@dataclass(frozen=True)
class PreparedVariant:
    """One optimization variant after optimize's accuracy gate: served only when accepted."""

    archive: str | None  # the variant's archive (None: refused, or it could not be made)
    accepted: bool
    reason: str  # why refused, or "accurate" / "as archived"
    agreement: dict[str, Any] | None = None  # optimize's agreement with the original, as its report has it

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreparedVariant:
        """From variants.json (an interrupted run's, read by --resume)."""
        return cls(data.get("archive"), bool(data.get("accepted")), str(data.get("reason", "")), data.get("agreement"))


@dataclass
class TuneResult:
    request: TuneRequest
    archive: Path
    model: str
    space: SearchSpace
    default: Trial | None = None
    trials: list[Trial] = field(default_factory=list)
    variants: dict[str, PreparedVariant] = field(default_factory=dict)
    archives: dict[str, Path] = field(default_factory=dict)
    interrupted: str | None = None
    time_up: bool = False
    elapsed_s: float = 0.0

    def best(self) -> Trial | None:
        return best_of(self.trials, self.request.constraints)


def resolve_target(target: str | None) -> Path:
    """The archive a run tunes: a .mar path, or a bundled example (tiny when none is named)."""
    path = archive_named(target, f"a .mar, a bundled example ({example_choices()}) or nothing (tiny)")
    read_manifest(path)  # a clean error for a file that is not an archive, before anything starts
    return path


def prepare(request: TuneRequest, resume: Path | None, report_dir: str | None) -> tuple[TuneRequest, Path]:
    """Everything checked before a folder is made or a server started: the space, --resume, the target and
    its request body. The request with its target resolved to an archive, and the report folder."""
    from launchkit.bench.inputs import load_payloads
    from launchkit.core.results import default_report_dir, writable_folder

    if request.space:
        parse_space(request.space, default_space(1, ServingConfig(), ["original"]))
    if resume is not None and report_dir:
        raise UsageError("--resume DIR continues in DIR: give --resume or --report-dir, not both")
    if resume is not None and not (resume / "trials.jsonl").is_file():
        raise UsageError(f"--resume: {resume / 'trials.jsonl'} not found; give the report folder of an earlier "
                         "launchkit tune run")
    archive = resolve_target(request.target)
    load_payloads(request.inputs, request.content_type, archive)
    name = Path(request.target).stem if request.target else "tiny"
    folder = writable_folder(resume or report_dir or default_report_dir(f"tune-{name}"),
                             "--resume" if resume else "--report-dir")
    return replace(request, target=str(archive)), folder


def default_config(archive: Path) -> ServingConfig:
    """What `launchkit serve ARCHIVE` runs with no flags: the archive's model-config or serve's defaults."""
    settings = model_config_of(archive, read_manifest(archive))
    serve = ModelSettings()  # serve's own defaults, where the archive says nothing
    config = ServingConfig(workers=int(settings.get("minWorkers", serve.workers)),
                           batch_size=int(settings.get("batchSize", serve.batch_size)),
                           delay_ms=float(settings.get("maxBatchDelay", serve.max_batch_delay_ms)),
                           streams=int(settings.get("streams", serve.streams)))
    return config.canonical()


def machine_cpus() -> int:
    from launchkit.core.topology import read_topology

    return len(read_topology().allowed_cores) or 1


def wanted_variants(request: TuneRequest) -> list[str]:
    """Optimization variants to prepare: bf16 where the CPU has it natively, and what --space names."""
    listed = parse_knobs(request.space, KNOBS).get("variant")
    if listed:
        return list(listed)
    from launchkit.core.isa import emulated_note, read_isa

    note = emulated_note("bf16", read_isa())
    if note:
        logger.warning("tune: bf16 left out of the search space: %s (name it in --space variant=... to try it "
                       "anyway)", note)
        return ["original"]
    return ["original", "bf16"]


def prepare_variants(archive: Path, variants: list[str], folder: Path, status: Status) -> dict[str, PreparedVariant]:
    """Each non-original variant through `launchkit optimize`'s accuracy gate; only accepted ones are served."""
    from launchkit.model.spec import OptimizationSpec
    from launchkit.optimize.command import OptimizeRequest, run_optimize

    prepared = {"original": PreparedVariant(str(archive), True, "as archived")}
    for variant in variants:
        if variant == "original":
            continue
        output = folder / f"{archive.stem}-{variant}.mar"
        status(f"checking the {variant} variant's accuracy (launchkit optimize)")
        spec = OptimizationSpec(variant, True, "torchscript")
        try:
            result = run_optimize(OptimizeRequest(spec=spec, target=str(archive), batch_sizes=(8,), samples=128,
                                                  seconds=0.5, force=True, output=str(output), calibration_samples=64),
                                  progress=lambda message: status(f"{variant}: {message}"))
        except LaunchkitError as error:
            prepared[variant] = PreparedVariant(None, False, str(error).splitlines()[0][:300])
            continue
        accepted = result.accepted and result.artifact is not None
        prepared[variant] = PreparedVariant(str(output) if accepted else None, accepted, result.reason or "accurate",
                                            result.agreement)
        if not accepted and output.exists():
            output.unlink()
    return prepared


def run_tune(request: TuneRequest, folder: Path, status: Status, finished: Callable[[Trial], None],
             resume: Path | None = None) -> TuneResult:
    """Search until done, out of time, or stopped by a signal; the result holds every trial."""
    started = time.monotonic()
    archive = resolve_target(request.target)
    model = read_manifest(archive).model_name
    payloads = load_payloads(request.inputs, request.content_type, archive)  # before any server starts
    default = default_config(archive)
    cpus = request.cpus or machine_cpus()
    journal = folder / "trials.jsonl"
    _check_same_model(resume, model)
    (folder / "tune.json").write_text(json.dumps({"model": model, "archive": str(archive.resolve())}, indent=2))
    previous = _read_journal(resume / "trials.jsonl") if resume else []
    prepared = _read_variants(resume) if resume else None
    result = TuneResult(request, archive, model, default_space(cpus, default, ["original"]))
    signals = ExitStack()  # stop signals raise Interrupted until the finally below
    signals.enter_context(handling(raise_interrupted))
    servers: Servers | None = None
    try:
        if prepared is None:
            prepared = prepare_variants(archive, wanted_variants(request), folder / "variants", status)
        result.variants = prepared
        (folder / "variants.json").write_text(json.dumps({name: asdict(info) for name, info in prepared.items()},
                                                         indent=2))
        result.archives = {name: Path(info.archive) for name, info in prepared.items()
                           if info.accepted and info.archive}
        base = default_space(cpus, default, list(result.archives))
        space = parse_space(request.space, base) if request.space else base
        unknown = [value for value in space.of("variant") if value not in result.archives]
        if unknown:
            logger.warning("variant(s) %s not served: %s", ", ".join(unknown), "; ".join(
                f"{name}: {prepared[name].reason if name in prepared else 'not prepared'}" for name in unknown))
            space = replace(space, values=tuple((attribute, tuple(v for v in values if v in result.archives))
                                                if attribute == "variant" else (attribute, values)
                                                for attribute, values in space.values))
            if not space.of("variant"):
                raise UsageError("no optimization variant of --space can be served (each failed launchkit "
                                 "optimize's accuracy gate; see variants.json): add variant=original")
        result.space = space
        start = start_point(default, space)
        search = (QuickSearch(space, start, request.constraints, seed_points(start, space)) if request.mode == "quick"
                  else BruteSearch(space, start, request.constraints))
        servers = Servers(result.archives, folder)
        # time kept for confirming the leaders: a server start, a warm-up and a double level each
        reserve = CONFIRMED * (10.0 + request.measure.warmup_seconds + 2 * request.measure.level_seconds)
        with journal.open("a") as log:
            for trial in previous:
                judge(trial, request.constraints)
                _keep(result, search, trial, default)
            if result.default is None:
                status(f"trial {len(result.trials) + 1}: {default.label()} (the default configuration)")
                trial = _measure(default, servers, payloads, request, status)
                _keep(result, search, trial, default, log)
                finished(trial)
            while True:
                config = search.next_config()
                if config is None:
                    break
                left = request.max_time_s - (time.monotonic() - started) - reserve
                average = sum(t.seconds for t in result.trials) / max(len(result.trials), 1)
                if left < max(average * 0.5, 1.0):
                    result.time_up = True
                    break
                status(f"trial {len(result.trials) + 1}: {config.label()}")
                trial = _measure(config, servers, payloads, request, status)
                _keep(result, search, trial, default, log)
                finished(trial)
            _confirm(result, servers, payloads, request, status, log)
    except Interrupted as stop:
        result.interrupted = signal.Signals(stop.signum).name
    finally:
        if servers is not None:
            servers.stop()
        signals.close()
        result.elapsed_s = time.monotonic() - started + sum(t.seconds for t in previous)
    return result


def _confirm(result: TuneResult, servers: Servers, payloads: list[Any], request: TuneRequest, status: Status,
             log: Any) -> None:
    """Measure the leaders again (see measure.confirm_trial and search.next_to_confirm): the best is
    chosen among the confirmed."""
    constraints = request.constraints
    while (trial := next_to_confirm(result.trials, constraints, CONFIRMED)) is not None:
        status(f"confirming {trial.config.label()}")
        label = trial.config.label()

        def confirming(message: str, label: str = label) -> None:
            status(f"confirming {label}: {message}")

        confirm_trial(trial, servers, payloads, constraints, request.measure, confirming)
        log.write(json.dumps(trial.to_dict(constraints) | {"confirmation": True}) + "\n")
        log.flush()


def _measure(config: ServingConfig, servers: Servers, payloads: list[Any], request: TuneRequest,
             status: Status) -> Trial:
    trial = measure_trial(config, servers, payloads, request.constraints, request.measure,
                          lambda message: status(f"{config.label()}: {message}"))
    logger.debug(trial_line(trial, request.constraints))
    return trial


def _keep(result: TuneResult, search: Any, trial: Trial, default: ServingConfig, log: Any = None) -> None:
    result.trials.append(trial)
    if trial.config == default and result.default is None:
        result.default = trial
    if result.space.contains(trial.config):  # the climb only starts from points of the space
        search.record(trial)
    if log is not None:
        log.write(json.dumps(trial.to_dict(result.request.constraints)) + "\n")
        log.flush()


def _check_same_model(resume: Path | None, model: str) -> None:
    meta = resume / "tune.json" if resume else None
    if meta is not None and meta.is_file():
        earlier = json.loads(meta.read_text()).get("model")
        if earlier != model:
            raise UsageError(f"--resume {resume}: that run tuned {earlier}, not {model}; give the same TARGET")


def _read_journal(path: Path) -> list[Trial]:
    if not path.is_file():
        raise UsageError(f"--resume: {path} not found; give the report folder of an earlier launchkit tune run")
    trials: dict[ServingConfig, Trial] = {}  # a confirmation line replaces its trial's first line
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            trial = Trial.from_dict(json.loads(line))
            trials[trial.config] = trial
        except (ValueError, KeyError, TypeError) as error:
            raise UsageError(f"--resume: {path} line {number} is not a trial ({error}); the file was changed by "
                             "hand or cut short") from None
    return list(trials.values())


def _read_variants(folder: Path) -> dict[str, PreparedVariant] | None:
    path = folder / "variants.json"
    if not path.is_file():
        return None
    prepared = {name: PreparedVariant.from_dict(info) for name, info in json.loads(path.read_text()).items()}
    for info in prepared.values():  # a variant archive that is gone is prepared again
        if info.accepted and not (info.archive and Path(info.archive).is_file()):
            return None
    return prepared

