"""Each test that issue 25 repaired, against a mutant it is meant to catch: the old test lets it through, the new one fails.

    python scripts/mutants.py [--only NAME,...]

For every mutant below: the source is changed as written (one exact replacement), then

1. the repaired test runs on the mutant: it must fail;
2. the test as it was before its repair (``git show COMMIT^:path``, put in the test's place) runs on the
   unchanged code: it must pass (else the comparison says nothing);
3. the old test runs on the mutant: it passes, which is what issue 25 found (a test that cannot fail).

Every file is restored afterwards (``git checkout``), also after Ctrl-C. Prints a markdown table; exit 1
when a repaired test lets its mutant through. Takes a few minutes (most tests start servers).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    source: str  # the file changed
    old: str  # exactly once in it
    new: str
    test: str  # the repaired test's node id
    repaired_in: str  # the commit that repaired it (its parent holds the old test)
    old_test: str = ""  # the old test's node id where it had another name

    @property
    def test_file(self) -> str:
        return self.test.split("::")[0]


MUTANTS = [
    Mutant("a metric family renamed (absent from /metrics)", "launchkit/serve/api/metrics.py",
           'CounterMetricFamily("launchkit_worker_restarts"', 'CounterMetricFamily("launchkit_worker_restart"',
           "tests/serve/test_metrics_kserve.py::test_metrics_count_known_traffic", "4afc78e"),
    Mutant("TorchServe's queue latency always 0", "launchkit/serve/api/ts_metrics.py",
           "totals.queue_seconds * 1e6", "totals.queue_seconds * 0",
           "tests/serve/compat/test_torchserve_parity.py::"
           "test_handlers_on_torchserves_own_ts_package_and_torchserves_metric_names", "4afc78e"),
    Mutant("a stream runs without its OpenMP team", "launchkit/runtime/threads.py",
           "    torch.set_num_threads(len(cpus))\n    _bind_team(cpus)", "    torch.set_num_threads(1)\n    _bind_team(cpus[:1])",
           "tests/runtime/test_runtime.py::test_streams_run_pinned_each_with_its_own_team", "4afc78e"),
    Mutant("bench --compare never reports a regression", "launchkit/bench/compare.py",
           "    bad = [row for row in rows if row.regressed]", "    bad = []",
           "tests/bench/test_trust.py::test_a_baseline_of_another_benchmark_is_refused_unless_forced", "4afc78e"),
    Mutant("the quota warning names no cgroup file", "launchkit/launch/plan.py",
           'f"CPU quota is {quota:g} CPUs ({topology.quota_source}) but',
           'f"CPU quota is {quota:g} CPUs (cgroup) but',
           "tests/deploy/test_container.py::test_the_entrypoint_serves_a_pod_within_its_quota_and_drains_on_sigterm",
           "4afc78e"),
    Mutant("quick mode climbs in the order measured, not best first", "launchkit/tune/search.py",
           "        for trial in ranked:\n",
           "        for trial in sorted(ranked, key=lambda trial: list(self.measured).index(trial.config)):\n",
           "tests/tune/test_space.py::test_quick_mode_climbs_best_first_from_the_start", "4afc78e",
           "tests/tune/test_space.py::test_quick_mode_climbs_to_the_better_neighbour_and_stops_at_a_peak"),
    Mutant("tune --run forgets its measured runs on Ctrl-C", "launchkit/tune/programs.py",
           "        interrupted = True\n", "        interrupted = True\n        trials.clear()\n",
           "tests/tune/test_tune_run.py::test_ctrl_c_keeps_the_runs_measured", "0960e69"),
    Mutant("the tiny example's handler doubles its answers", "launchkit/examples/tiny_handler.py",
           "        outputs = data.tolist()", "        outputs = (data * 2).tolist()",
           "tests/serve/compat/test_v2_clients.py::test_tritonclient_and_the_kserve_sdk_infer_with_numpy_in_binary",
           "56ed506"),
    Mutant("the tiny example's handler doubles its answers (KServe v2)", "launchkit/examples/tiny_handler.py",
           "        outputs = data.tolist()", "        outputs = (data * 2).tolist()",
           "tests/serve/test_metrics_kserve.py::test_kserve_v2_endpoints_and_rows_batch_together", "56ed506"),
    Mutant("the tiny example's handler doubles its answers (examples)", "launchkit/examples/tiny_handler.py",
           "        outputs = data.tolist()", "        outputs = (data * 2).tolist()",
           "tests/serve/test_server.py::test_examples_tiny_and_resnet18", "56ed506"),
]


def passes(node: str) -> bool:
    done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                           node], cwd=ROOT, capture_output=True, text=True, timeout=900)
    return done.returncode == 0


def mutate(mutant: Mutant) -> None:
    path = ROOT / mutant.source
    text = path.read_text()
    if text.count(mutant.old) != 1:
        raise SystemExit(f"{mutant.name}: {mutant.old!r} is not exactly once in {mutant.source}; update the mutant")
    path.write_text(text.replace(mutant.old, mutant.new))


def old_test(mutant: Mutant) -> None:
    text = subprocess.run(["git", "show", f"{mutant.repaired_in}^:{mutant.test_file}"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout
    (ROOT / mutant.test_file).write_text(text)


def restore(mutant: Mutant) -> None:
    subprocess.run(["git", "checkout", "--", mutant.source, mutant.test_file], cwd=ROOT, check=True)


def judge(mutant: Mutant) -> list[str]:
    try:
        mutate(mutant)
        new_catches = not passes(mutant.test)
        restore(mutant)
        old_test(mutant)
        old_node = mutant.old_test or mutant.test
        old_valid = passes(old_node)
        mutate(mutant)
        old_lets_through = passes(old_node)
    finally:
        restore(mutant)
    verdict = "caught" if new_catches else "**let through**"
    old = ("let through" if old_lets_through else "caught") if old_valid else "fails on the unchanged code"
    return [mutant.name, f"`{mutant.test}`", mutant.repaired_in, old, verdict]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated parts of mutant names")
    args = parser.parse_args()
    if subprocess.run(["git", "diff", "--quiet"], cwd=ROOT).returncode != 0:
        raise SystemExit("the checkout has uncommitted changes: commit or stash them first (this script restores "
                         "files with git checkout)")
    chosen = [m for m in MUTANTS if not args.only or any(part in m.name for part in args.only.split(","))]
    rows = []
    for mutant in chosen:
        rows.append(judge(mutant))
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    print("| mutant | repaired test | repaired in | old test | repaired test |\n|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0 if all(row[-1] == "caught" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
