#!/usr/bin/env bash
# Installs what is missing, then runs ruff, mypy (strict on the pure layers) and the whole
# pytest suite. Extra arguments go to pytest (e.g. scripts/run-tests.sh -k lattice).
set -euo pipefail
source "$(dirname "$0")/ensure-env.sh"
ensure_redis
ensure_iproute2 || echo "[setup] without iproute2 the network-fault test skips"
unset CLOUDBURST_EXTRAS  # ours, not a config override (CLOUDBURST_<SECTION>__<FIELD>)
cd "$ROOT"
echo "[tests] ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check . >/dev/null || { "$VENV/bin/ruff" format --diff . | head -50; echo "[tests] ruff format: run .venv/bin/ruff format ." >&2; exit 1; }
echo "[tests] mypy --strict lattices and the KVS hot path"
"$VENV/bin/mypy" --strict lattices anna/zmtp.py anna/client.py anna/shard/server.py cloudburst/supervision.py cloudburst/supervisor.py
echo "[tests] pytest"
exec "$PY" -m pytest "$@"
