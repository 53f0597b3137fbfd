#!/usr/bin/env bash
# Starts a local Cloudburst cluster in the background (KVS, scheduler, executors),
# waits until it answers, and prints how to connect. Stop it with
# ./scripts/stop-cloudburst-local.sh. Options go to `python -m cloudburst.local start`
# (e.g. --executors 4, --config conf/local.yml).
set -euo pipefail
CLOUDBURST_EXTRAS="${CLOUDBURST_EXTRAS:-test}"
source "$(dirname "$0")/ensure-env.sh"
cd "$ROOT"
exec "$PY" -m cloudburst.local start "$@"
