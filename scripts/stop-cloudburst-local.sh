#!/usr/bin/env bash
# Stops every process the start script started (by recorded PID) and cleans up.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
if [ ! -x .venv/bin/python ]; then echo "nothing to stop (no .venv)"; exit 0; fi
exec .venv/bin/python -m cloudburst.local stop "$@"
