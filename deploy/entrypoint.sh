#!/bin/sh
# The container's entrypoint: `launchkit serve` in the foreground (exec: it receives SIGTERM itself).
#   - models: LAUNCHKIT_MODELS (e.g. "all" or "tiny=tiny.mar"), else config.properties' load_models,
#     else every archive of the model store (LAUNCHKIT_MODEL_STORE, default /mnt/models/model-store);
#   - config.properties: LAUNCHKIT_TS_CONFIG, else /mnt/models/config/config.properties when present
#     (the layout KServe's TorchServe runtime uses), else none;
#   - any other setting as LAUNCHKIT_<KEY> (read by launchkit serve itself); extra flags: "$@".
set -eu
config="${LAUNCHKIT_TS_CONFIG:-}"
if [ -z "$config" ] && [ -f /mnt/models/config/config.properties ]; then
  config=/mnt/models/config/config.properties
fi
set -- --graceful-timeout "${LAUNCHKIT_GRACEFUL_TIMEOUT:-25}" "$@"
if [ -n "${LAUNCHKIT_MODELS:-}" ]; then
  set -- --models "$LAUNCHKIT_MODELS" "$@"
elif [ -z "$config" ]; then
  set -- --models all "$@"   # with a config.properties, its load_models / models= decide
fi
if [ -n "$config" ]; then
  set -- --ts-config "$config" "$@"
fi
exec launchkit serve --model-store "${LAUNCHKIT_MODEL_STORE:-/mnt/models/model-store}" "$@"
