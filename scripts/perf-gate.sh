#!/usr/bin/env bash
# The performance gate the project's CI runs on itself (and a user can copy): the bundled tiny
# example, closed loop at 4, five trials, judged against a committed baseline on the server's own
# mean inference time per batch (the median of the trials, from its /metrics). That figure is the
# predict path alone: a 2x slower model call moves it about +75 %, while req/s and client latency
# also carry the HTTP stack and the load generator, which share the runner's two cores with it.
# On the 2-core development machine it still swings by about a third from run to run, so the
# baseline is the median of five recorded runs, and a regression must show in two runs in a row.
#   bash scripts/perf-gate.sh [TINY.mar]      judge this checkout (exit 3: regressed); a .mar of the
#                                             tiny model instead of the bundled one (a planted regression)
#   bash scripts/perf-gate.sh --record        write a new baseline (after a deliberate change)
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=benchmarks/baselines/ci-tiny.json
fail_on=${LAUNCHKIT_GATE_FAIL_ON:-inference=+60%}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
record=0
[ "${1:-}" = "--record" ] && { record=1; shift; }
bench() {  # bench REPORT_DIR [more flags]
  local dir=$1; shift
  .venv/bin/launchkit bench ${target:+"$target"} --concurrency 4 --requests 5000 --warmup 500 --trials 5 --quiet \
    --report-dir "$dir" "$@"
}
target=${1:-}
if [ "$record" = 1 ]; then
  for i in 1 2 3 4 5; do bench "$out/r$i" >/dev/null 2>&1; done
  .venv/bin/python - "$out" "$baseline" <<'PY'
import json, shutil, statistics, sys
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
for attempt in 1 2; do
  if bench "$out/a$attempt" --compare "$baseline" --fail-on "$fail_on" --force >"$out/table$attempt" 2>&1; then
    grep -E "inference *│" "$out/table$attempt" || true
    note=""; [ "$attempt" = 2 ] && note=" (the first run's regression did not repeat)"
    echo "perf-gate: passed$note"
    exit 0
  else
    status=$?
  fi
  [ "$status" = 3 ] || { cat "$out/table$attempt"; exit "$status"; }  # not a regression: a broken run
  grep -E "inference *│" "$out/table$attempt" || true
done
cat "$out/table2"
echo "perf-gate: regressed in two runs in a row"
exit 3
