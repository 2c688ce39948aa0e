#!/usr/bin/env bash
# Run benchmark scripts on a lent machine that reaches no package registry (it has its own Python
# 3.12 and torch; no numactl, tcmalloc, jemalloc or Java). Everything it needs comes in one ignored
# folder, .device/, which this script fills on a machine that reaches PyPI and Debian:
#   bash benchmarks/device.sh --fill                  (wheels for Python 3.12 in .device/wheels;
#                                                      Debian's tcmalloc-minimal and jemalloc in .device/libs)
#   bash benchmarks/device.sh streams:"--part served" drop_in ...   (each NAME[:ARGS] runs benchmarks/NAME.py ARGS)
# perf_analyzer and its two libraries go in .device/pa by hand (see drop_in.py). The allocators are
# found as on a normal server: LAUNCHKIT_LIBRARY_PATH points launchkit run/serve at .device/libs.
# Results are copied to $OUT when it is set.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--fill" ]; then
  mkdir -p .device/wheels .device/libs
  platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
             --platform manylinux_2_27_x86_64 --platform manylinux_2_12_x86_64 --platform manylinux1_x86_64
             --platform manylinux_2_5_x86_64)
  download() { python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
                 "${platforms[@]}" -d .device/wheels "$@"; }
  download click rich psutil py-cpuinfo "uvicorn>=0.30,<0.55" httptools uvloop pyyaml pillow prometheus-client
  download --no-deps matplotlib contourpy cycler fonttools kiwisolver packaging pyparsing python-dateutil tzdata six
  debs=$(mktemp -d)
  (cd "$debs" && apt-get download -q libtcmalloc-minimal4 libjemalloc2 && for f in *.deb; do dpkg-deb -x "$f" x; done)
  cp -L "$debs"/x/usr/lib/x86_64-linux-gnu/{libtcmalloc_minimal.so.4,libjemalloc.so.2} .device/libs/
  rm -rf "$debs"
  du -sh .device/wheels .device/libs
  exit 0
fi
export LAUNCHKIT_LIBRARY_PATH="$PWD/.device/libs"
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
  PYTHONUNBUFFERED=1 "$PY" "$script" $args || echo "=== $script exited $?"
  if [ -n "${OUT:-}" ]; then cp -r results/. "$OUT/"; fi  # after each script: a later timeout loses nothing
done
