"""What a serving configuration is, which ones a search may try, and how each is served. Pure.

A :class:`ServingConfig` holds the knobs launchkit owns: workers and cores per worker, streams per
worker, batch size and delay, the optimization variant (an archive `launchkit optimize` accepted),
the allocator and the OpenMP runtime and wait policy. A :class:`SearchSpace` lists, per knob, the
values to try in order (neighbours in that order are one step apart, which is what quick mode
climbs along). ``--space`` narrows or widens it: ``workers=1,2;batch=1,4,8;delay=0,5``.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from itertools import product
from pathlib import Path
from typing import Any

from launchkit.core.errors import UsageError
from launchkit.launch.env import Allocator, WaitPolicy
from launchkit.serve.settings import DEFAULT_BATCH_DELAY_MS

AUTO = "auto"  # cores per worker: the server's even split; allocator/OpenMP: the server's own choice


@dataclass(frozen=True, order=True)
class ServingConfig:
    workers: int = 1
    cores_per_worker: int | str = AUTO  # the server's choice: the even split (one core: a small model at batch 1)
    streams: int = 1
    batch_size: int = 1
    delay_ms: float = DEFAULT_BATCH_DELAY_MS  # serve's
    variant: str = "original"  # "original" or an optimization accepted by launchkit optimize, e.g. "bf16"
    allocator: str = AUTO
    omp_runtime: str = AUTO
    omp_wait: str = AUTO

    def canonical(self) -> ServingConfig:
        """One spelling per behaviour: a batch of 1 never waits, so its delay does not matter."""
        return replace(self, delay_ms=0.0) if self.batch_size == 1 else self

    def label(self) -> str:
        cores = "" if self.cores_per_worker == AUTO else f" × {self.cores_per_worker} core(s)"
        parts = [f"{self.workers} worker(s){cores}"]
        if self.streams > 1:
            parts.append(f"{self.streams} streams")
        parts.append(f"batch {self.batch_size}" + (f" / {self.delay_ms:g} ms" if self.batch_size > 1 else ""))
        parts.append(self.variant)
        parts += [f"{name} {value}" for name, value in (("allocator", self.allocator), ("OpenMP", self.omp_runtime),
                                                        ("wait", self.omp_wait)) if value != AUTO]
        return ", ".join(parts)

    def launcher_args(self) -> str:
        """`launchkit run` flags for the workers (--cpu-launcher-args / cpu_launcher_args)."""
        args = []
        if self.cores_per_worker != AUTO:
            args += ["--ncores-per-instance", str(self.cores_per_worker)]
        for flag, value in (("--memory-allocator", self.allocator), ("--omp-runtime", self.omp_runtime),
                            ("--omp-wait", self.omp_wait)):
            if value != AUTO:
                args += [flag, value]
        return shlex.join(args)

    def serve_args(self) -> list[str]:
        """`launchkit serve` flags that apply this configuration (the archive chosen by ``variant`` apart)."""
        args = ["--workers", str(self.workers), "--batch-size", str(self.batch_size),
                "--max-batch-delay", f"{self.delay_ms:g}", "--streams", str(self.streams)]
        if self.launcher_args():
            args += ["--cpu-launcher-args", self.launcher_args()]
        return args

    def server_key(self) -> tuple[Any, ...]:
        """What needs a new server when it changes; the worker count alone is rescaled in place."""
        return (self.cores_per_worker, self.streams, self.batch_size, self.delay_ms, self.variant, self.allocator,
                self.omp_runtime, self.omp_wait)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ServingConfig:
        known = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


@dataclass(frozen=True)
class Knob:
    """One ``--space`` knob: the attribute it sets, how its values are read, and what is allowed."""

    attribute: str
    parse: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    too_small: str = ""  # the error's words for a value below ``minimum``
    kind: str = "numbers"  # what ``parse`` accepts, for the error


def _cores(text: str) -> int | str:
    return AUTO if text == AUTO else int(text)


ALLOCATORS = tuple(kind.value for kind in Allocator)  # auto, default, tcmalloc, jemalloc
KNOBS: dict[str, Knob] = {
    "workers": Knob("workers", int, minimum=1, too_small="values are 1 or more"),
    "cores": Knob("cores_per_worker", _cores, minimum=1, too_small="values are 1 or more", kind="numbers or auto"),
    "streams": Knob("streams", int, minimum=1, too_small="values are 1 or more"),
    "batch": Knob("batch_size", int, minimum=1, too_small="values are 1 or more"),
    "delay": Knob("delay_ms", float, minimum=0, too_small="delays are 0 ms or more"),
    "variant": Knob("variant", choices=("original", "bf16", "int8")),
    "allocator": Knob("allocator", choices=ALLOCATORS),
    "omp": Knob("omp_runtime", choices=(AUTO, "gnu", "intel", "default")),
    "wait": Knob("omp_wait", choices=(AUTO, *(kind.value for kind in WaitPolicy))),
}
SERVING_EXAMPLE = "e.g. --space 'workers=1,2;batch=1,8;delay=0,5'"


def parse_knobs(text: str, knobs: Mapping[str, Knob], hint: str = SERVING_EXAMPLE) -> dict[str, tuple[Any, ...]]:
    """``knob=v1,v2;knob=...`` → {attribute: values}, for the knobs named; UsageError says what is wrong."""
    found: dict[str, tuple[Any, ...]] = {}
    for item in (part.strip() for part in text.replace("\n", ";").split(";")):
        if not item:
            continue
        name, equals, listed = item.partition("=")
        knob = knobs.get(name.strip())
        if not equals or knob is None:
            raise UsageError(f"--space {item!r}: expected KNOB=V1,V2 with KNOB one of {', '.join(knobs)} ({hint})")
        name = name.strip()
        try:
            parsed = tuple(dict.fromkeys(knob.parse(value.strip()) for value in listed.split(",") if value.strip()))
        except ValueError:
            raise UsageError(f"--space {item!r}: {name} takes {knob.kind}") from None
        if not parsed:
            raise UsageError(f"--space {item!r}: give at least one value")
        if knob.choices is not None and any(value not in knob.choices for value in parsed):
            raise UsageError(f"--space {item!r}: {name} is one of {', '.join(knob.choices)}")
        if knob.minimum is not None and any(value != AUTO and value < knob.minimum for value in parsed):
            raise UsageError(f"--space {item!r}: {name} {knob.too_small}")
        found[knob.attribute] = parsed
    return found


@dataclass(frozen=True)
class SearchSpace:
    """Per knob, the values to try, in order (quick mode steps to a value's neighbours)."""

    values: tuple[tuple[str, tuple[Any, ...]], ...]  # (ServingConfig attribute, values)
    cpus: int  # usable physical cores: workers × cores per worker must fit

    def of(self, attribute: str) -> tuple[Any, ...]:
        return dict(self.values)[attribute]

    def fits(self, config: ServingConfig) -> bool:
        cores = config.cores_per_worker if config.cores_per_worker != AUTO else max(self.cpus // config.workers, 1)
        if config.workers > self.cpus or config.workers * int(cores) > self.cpus:
            return False
        return config.streams <= int(cores)  # a stream needs a core of its own

    def contains(self, config: ServingConfig) -> bool:
        """Whether the space lists ``config``'s every value; a batch of 1's delay is not one (it never waits:
        its canonical delay is 0 even where the space lists only other delays)."""
        return all(getattr(config, attribute) in values or (attribute == "delay_ms" and config.batch_size == 1)
                   for attribute, values in self.values)

    def settle(self, config: ServingConfig) -> ServingConfig:
        """``config`` with each value the space does not list moved to the nearest listed one, canonical: a
        step from batch 1 (delay 0) to batch 4 takes one of the space's delays."""
        changes = {attribute: _nearest(getattr(config, attribute), values) for attribute, values in self.values
                   if getattr(config, attribute) not in values}
        return replace(config, **changes).canonical() if changes else config.canonical()

    def neighbours(self, config: ServingConfig) -> list[ServingConfig]:
        """Configurations one step away along one knob, nearest knobs first (the order of ``values``)."""
        found: list[ServingConfig] = []
        for attribute, values in self.values:
            current = getattr(config, attribute)
            if current not in values:
                continue
            index = values.index(current)
            for step in (1, -1):
                if 0 <= index + step < len(values):
                    candidate = self.settle(replace(config, **{attribute: values[index + step]}))
                    if candidate != config and self.fits(candidate) and candidate not in found:
                        found.append(candidate)
        return found

    def every(self) -> Iterator[ServingConfig]:
        """Every configuration of the space that fits the machine (brute mode), each once."""
        attributes = [attribute for attribute, _ in self.values]
        seen: set[ServingConfig] = set()
        for combination in product(*(values for _, values in self.values)):
            config = ServingConfig(**dict(zip(attributes, combination))).canonical()
            if config not in seen and self.fits(config):
                seen.add(config)
                yield config

    def size(self) -> int:
        return sum(1 for _ in self.every())


def _nearest(current: Any, values: Sequence[Any]) -> Any:
    """The listed value nearest ``current``: by distance for numbers, else the first listed."""
    numeric = [value for value in values if not isinstance(value, str)]
    if isinstance(current, (int, float)) and not isinstance(current, bool) and numeric:
        return min(numeric, key=lambda value: abs(value - current))
    return values[0]


def _with(values: Sequence[Any], extra: Any) -> tuple[Any, ...]:
    return tuple(sorted(set(values) | {extra}, key=lambda value: (isinstance(value, str), value)))


def default_space(cpus: int, default: ServingConfig, variants: Sequence[str]) -> SearchSpace:
    """The space tune searches unless ``--space`` says otherwise, from the machine and the model.

    Workers: powers of two up to the cores; cores per worker: the even split, or fewer (leaving the
    rest to the frontend); batch 1-32 and delays up to 20 ms (plus the model's own); streams while a
    worker has cores for them; each accepted optimization variant; the allocator and OpenMP choices
    `launchkit run` offers.
    """
    powers = [value for value in (1, 2, 4, 8, 16, 32, 64, 128) if value <= cpus]
    cores: tuple[Any, ...] = (AUTO, *[value for value in powers if value < cpus])
    values = (
        ("workers", _with(powers, default.workers)),
        ("batch_size", _with((1, 2, 4, 8, 16, 32), default.batch_size)),
        ("delay_ms", _with((0.0, 1.0, 2.0, 5.0, 10.0, 20.0), default.delay_ms)),
        ("cores_per_worker", cores),
        ("streams", tuple(value for value in (1, 2, 4) if value <= cpus)),
        ("variant", ("original", *[variant for variant in variants if variant != "original"])),
        ("omp_wait", (AUTO, "passive", "spin")),  # auto is brief for a small model, spin for a large one
        ("allocator", (AUTO, "jemalloc", "default")),
        ("omp_runtime", (AUTO, "intel")),
    )
    return SearchSpace(values, cpus)


def parse_space(text: str, base: SearchSpace) -> SearchSpace:
    """``knob=v1,v2;knob=...`` replaces those knobs' values in ``base``; UsageError names what is wrong."""
    return SearchSpace(tuple({**dict(base.values), **parse_knobs(text, KNOBS)}.items()), base.cpus)


def start_point(default: ServingConfig, space: SearchSpace) -> ServingConfig:
    """The default configuration moved into the space (the nearest listed value of each knob)."""
    config = space.settle(default)
    if not space.fits(config):
        config = replace(config, workers=1, cores_per_worker=AUTO, streams=1).canonical()
    return config


def seed_points(start: ServingConfig, space: SearchSpace) -> tuple[ServingConfig, ...]:
    """Where quick mode looks right after the start: one single-core worker per core, batch 1.

    The default configuration is one worker; on a many-core machine the climb to one worker per
    core takes a step per doubling, each a server start and a concurrency ladder, and the time limit
    often ends the search halfway. One worker per core is the layout that serves small models best
    on such machines (measured in benchmarks/served_vs_torchserve.py), so it is measured second and
    the climb goes on from whichever is better.
    """
    workers = [value for value in space.of("workers") if space.fits(replace(start, workers=value, streams=1))]
    if not workers:
        return ()
    seed = space.settle(replace(start, workers=max(workers), streams=1, batch_size=min(space.of("batch_size")),
                                cores_per_worker=AUTO))
    return (seed,) if seed != start and space.contains(seed) and space.fits(seed) else ()


def config_properties(config: ServingConfig, model: str, archive: Path, extra: Mapping[str, str] = {}) -> str:
    """A config.properties that serves ``config`` from any directory (the archive by absolute path)."""
    archive = archive.resolve()
    settings: dict[str, Any] = {"defaultVersion": True, "marName": archive.name, "minWorkers": config.workers,
                                "maxWorkers": config.workers, "batchSize": config.batch_size,
                                "maxBatchDelay": config.delay_ms, "streams": config.streams}
    lines = [f"# written by launchkit tune: {config.label()}", f"model_store={archive.parent}",
             f"load_models={model}={archive.name}", f"models={json.dumps({model: {'1.0': settings}})}"]
    if config.launcher_args():
        lines.append(f"cpu_launcher_args={config.launcher_args()}")
    lines += [f"{key}={value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"
