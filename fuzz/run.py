"""Run one fuzz target under atheris (libFuzzer's engine, coverage from launchkit's own modules).

    python fuzz/run.py TARGET [libFuzzer options and corpus folders]
    python fuzz/run.py v2_json -max_total_time=60 /tmp/corpus fuzz/corpus/v2_json

The first folder is where new inputs go; pass the repository's corpus second so it is read, not
written. A crash (an exception other than launchkit's own error) stops the run, exit 1, and saves
the input as crash-<sha1> (``-artifact_prefix=`` chooses where). benchmarks/fuzz.py runs them all.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The parsers' modules, imported under instrumentation so the fuzzer sees their branches.
MODULES = (
    "launchkit.serve.worker.codec", "launchkit.serve.api.kserve_codec", "launchkit.serve.tensors",
    "launchkit.serve.api.kserve_v1", "launchkit.serve.properties", "launchkit.serve.settings",
    "launchkit.serve.limits", "launchkit.serve.addresses", "launchkit.archive.manifest", "launchkit.core.cpulist",
    "launchkit.core.values", "launchkit.model.spec", "launchkit.bench.config", "launchkit.bench.compare",
    "launchkit.tune.space",
)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    with atheris.instrument_imports(include=["launchkit"]):
        for module in MODULES:
            importlib.import_module(module)
    from fuzz.targets import TARGETS, checked

    warnings.simplefilter("ignore")  # a user's odd regex draws a FutureWarning: words, not a crash
    name = sys.argv[1]
    if name not in TARGETS:
        sys.exit(f"no fuzz target {name!r}; the targets are {', '.join(TARGETS)}")
    atheris.Setup([sys.argv[0], *sys.argv[2:]], checked(TARGETS[name]))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
