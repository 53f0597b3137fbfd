#!/usr/bin/env bash
# Starts a local Cloudburst cluster in the background (one supervisor that runs and
# restarts the KVS, scheduler and executors), waits until it answers, and prints how
# to connect. The data of the previous run is served again (--fresh deletes it first).
# Stop it with ./scripts/stop-cloudburst-local.sh. Options go to
# `cloudburst local start` (e.g. --executors 4, --config conf/local.yml, --run-dir DIR);
# CLOUDBURST_RUN_DIR and CLOUDBURST_<SECTION>__<FIELD> choose the directory and ports.
set -euo pipefail
CLOUDBURST_EXTRAS="${CLOUDBURST_EXTRAS:-test}"
source "$(dirname "$0")/ensure-env.sh"
unset CLOUDBURST_EXTRAS  # ours, not a config override (CLOUDBURST_<SECTION>__<FIELD>)
cd "$ROOT"
exec "$PY" -m cloudburst.local start "$@"
