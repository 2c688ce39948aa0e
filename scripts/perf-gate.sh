#!/usr/bin/env bash
# The performance gate the project's CI runs on itself (and a user can copy): the bundled mnist
# example (a small CNN, about 0.2 ms per batch on one thread), its worker on one core, closed loop
# at 4, three trials, judged
# against a committed baseline on the server's own mean inference time per batch (the median of the
# trials, from its /metrics). That figure is the predict path alone: a model call twice as slow
# moves it +85 %, while req/s and client latency also carry the HTTP stack and the load generator,
# which share the runner's cores. Chosen by measurement (docs/bench.md, "CI gate"): the tiny
# example's 25 µs inference swung by a third and hid a doubled model call. One core, one thread:
# with the worker's team of two OpenMP threads sleeping between operators, a busy runner made
# every operator wait for a thread to wake, and CI failed twice in a row with no change to the
# code (docs/bench.md); benchmarks/gate_check.py measures false alarms and catches.
# A regression must show in three judged runs in a row (after one unjudged warm-up run).
# The limit follows the machine: scripts/perf_reference.py times the same model in process (no
# launchkit code in the path) now and at --record, and when it is slower now (a slower or busier
# runner) the +40 % grows with the ratio, so the runner's speed moves the limit, not the verdict.
# A faster runner keeps +40 %: the reference itself swings by a tenth, and a limit tightened by that
# swing raised a false alarm in one run of twenty.
#   bash scripts/perf-gate.sh [MNIST.mar]     judge this checkout (exit 3: regressed); another archive
#                                             of the mnist model instead (a planted regression)
#   bash scripts/perf-gate.sh --record        write a new baseline (the median of five runs)
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=benchmarks/baselines/ci-mnist.json
reference_file=benchmarks/baselines/ci-mnist.reference-ms
allowed=${LAUNCHKIT_GATE_ALLOWED:-1.40}  # inference per batch may grow to this many times the baseline
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
record=0
[ "${1:-}" = "--record" ] && { record=1; shift; }
target=${1:-}
if [ -z "$target" ]; then
  .venv/bin/python -m launchkit.examples.build --export-path "$out" mnist >/dev/null
  target=$out/mnist.mar
fi
bench() {  # bench REPORT_DIR [more flags]
  local dir=$1; shift
  .venv/bin/launchkit bench "$target" --concurrency 4 --requests 3000 --warmup 300 --trials 3 --quiet \
    --cpu-launcher-args "--ncores-per-instance 1" --report-dir "$dir" "$@"
}
reference=$(.venv/bin/python scripts/perf_reference.py)
if [ "$record" = 1 ]; then
  echo "$reference" > "$reference_file"
  for i in 1 2 3 4 5; do bench "$out/r$i" >/dev/null 2>&1; done
  .venv/bin/python - "$out" "$baseline" <<'PY'
import json, shutil, sys
from pathlib import Path
runs = sorted(Path(sys.argv[1]).glob("r*/summary.json"))
value = lambda p: json.loads(p.read_text())["levels"][0]["server_view"]["handler_ms"]["inference"]["mean"]
middle = sorted(runs, key=value)[len(runs) // 2]
shutil.copy(middle, sys.argv[2])
print(f"perf-gate: baseline written to {sys.argv[2]}: inference {value(middle)} ms per batch "
      f"(runs: {', '.join(str(value(p)) for p in runs)})")
PY
  exit 0
fi
limit_for() {  # limit_for REFERENCE_MS: the --fail-on for a run judged with that reference
  local limit
  limit=$(.venv/bin/python -c "import sys; now, then, allowed = map(float, sys.argv[1:]); \
print(round((allowed * max(1.0, now / then) - 1) * 100))" "$1" "$(cat "$reference_file")" "$allowed")
  echo "${LAUNCHKIT_GATE_FAIL_ON:-inference=+$limit%}"
}
# one unjudged run first: the first run on a freshly set-up machine measured +72 % once (a CI run),
# and was normal on its repeat; then a regression must show in every one of three judged runs in a
# row (two were not enough on a busy runner: docs/bench.md). Each judged run has its own reference,
# timed just before it: a runner slowed for a minute (it happened in CI right after set-up: +60 %
# and +69 % in two runs, then -3 % to -27 % in three runs of the same clone) moves that run's limit
# too, not only the verdict. A run that passes ends the gate.
runs=3
bench "$out/warm" >/dev/null 2>&1 || true
for attempt in $(seq "$runs"); do
  [ "$attempt" = 1 ] || reference=$(.venv/bin/python scripts/perf_reference.py)
  fail_on=$(limit_for "$reference")
  echo "perf-gate: run $attempt: in-process reference $reference ms (baseline's $(cat "$reference_file") ms): limit $fail_on"
  if bench "$out/a$attempt" --compare "$baseline" --fail-on "$fail_on" --force >"$out/table$attempt" 2>&1; then
    grep -E "inference *│" "$out/table$attempt" || true
    [ "$attempt" = 1 ] && { echo "perf-gate: passed"; exit 0; }
    echo "perf-gate: passed (run $attempt; the regression before it did not repeat)"
    exit 0
  else
    status=$?
  fi
  [ "$status" = 3 ] || { cat "$out/table$attempt"; exit "$status"; }  # not a regression: a broken run
  grep -E "inference *│" "$out/table$attempt" || true
done
cat "$out/table$runs"
echo "perf-gate: regressed in $runs runs in a row"
exit 3
