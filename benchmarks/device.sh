#!/usr/bin/env bash
# Run benchmark scripts on a lent machine that reaches no package registry (it has its own Python
# and torch). Pure-Python and binary wheels for its Python come in .device/wheels (pip download
# --python-version 3.12 --only-binary=:all: ...); perf_analyzer and its two libraries in .device/pa.
#   bash benchmarks/device.sh streams drop_in ...     (each NAME runs benchmarks/NAME.py)
# Results are copied to $OUT when it is set.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /tmp/lk-venv/bin/python ]; then
  python3 -m venv --system-site-packages /tmp/lk-venv
  /tmp/lk-venv/bin/python -m pip install -q --no-index --find-links .device/wheels click rich psutil py-cpuinfo \
    uvicorn httptools uvloop pyyaml pillow prometheus-client
fi
export PYTHONPATH="$PWD" PERF_ANALYZER="$PWD/.device/pa/perf_analyzer"
chmod +x .device/pa/perf_analyzer 2>/dev/null || true
/tmp/lk-venv/bin/python -c "import torch, os; print('torch', torch.__version__, 'cpus', len(os.sched_getaffinity(0)))"
for name in "$@"; do
  script="benchmarks/${name%%:*}.py"
  args="${name#*:}"; [ "$args" = "$name" ] && args=""
  echo "=== $script $args"
  # shellcheck disable=SC2086
  /tmp/lk-venv/bin/python "$script" $args || echo "=== $script exited $?"
done
if [ -n "${OUT:-}" ]; then cp -r results/. "$OUT/"; fi
