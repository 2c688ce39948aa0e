#!/usr/bin/env bash
# Regenerate the protobuf modules from launchkit/serve/api/protos/*.proto (messages only: the services
# are registered by hand in launchkit/serve/api/grpc_inference.py, so no grpc stubs are generated).
# Needs grpcio-tools (in .venv-clients after `bash scripts/setup.sh --tests`); the generated modules
# need protobuf >= the version grpcio-tools was built with (pyproject pins the range).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv-clients/bin/python}
"$python" -m grpc_tools.protoc -I launchkit/serve/api/protos --python_out=launchkit/serve/api/protos \
  --pyi_out=launchkit/serve/api/protos launchkit/serve/api/protos/*.proto
