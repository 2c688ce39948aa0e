#!/usr/bin/env bash
# Run benchmark scripts on a lent machine that reaches no package registry (it has its own Python
# and torch). Pure-Python and binary wheels for its Python come in .device/wheels (pip download
# --python-version 3.12 --only-binary=:all: ...); perf_analyzer and its two libraries in .device/pa.
#   bash benchmarks/device.sh streams drop_in ...     (each NAME runs benchmarks/NAME.py)
# Results are copied to $OUT when it is set.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(command -v python3)  # the machine's own Python, the one with torch
if [ ! -d /tmp/lk-deps/click ]; then
  "$PY" -m pip install -q --no-index --find-links .device/wheels --target /tmp/lk-deps click rich psutil py-cpuinfo \
    uvicorn httptools uvloop pyyaml pillow prometheus-client
  # plots (tune, bench): matplotlib without its numpy dependency, which the machine's torch brings
  "$PY" -m pip install -q --no-index --no-deps --find-links .device/wheels --target /tmp/lk-deps matplotlib \
    contourpy cycler fonttools kiwisolver packaging pyparsing python-dateutil tzdata
fi
export PYTHONPATH="$PWD:/tmp/lk-deps" PERF_ANALYZER="$PWD/.device/pa/perf_analyzer"
chmod +x .device/pa/perf_analyzer 2>/dev/null || true
"$PY" -c "import torch, os; print('torch', torch.__version__, 'cpus', len(os.sched_getaffinity(0)))"
for name in "$@"; do
  script="benchmarks/${name%%:*}.py"
  args="${name#*:}"; [ "$args" = "$name" ] && args=""
  echo "=== $script $args"
  # shellcheck disable=SC2086
  "$PY" "$script" $args || echo "=== $script exited $?"
  if [ -n "${OUT:-}" ]; then cp -r results/. "$OUT/"; fi  # after each script: a later timeout loses nothing
done
