#!/usr/bin/env bash
# Stops every process of the local cluster (and anything a crash left behind) and
# removes its sockets and PID files. The data is kept for the next start; delete it
# with `.venv/bin/cloudburst local reset`. Same options/environment as the start script.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
if [ ! -x .venv/bin/python ]; then echo "nothing to stop (no .venv)"; exit 0; fi
exec .venv/bin/python -m cloudburst.local stop "$@"
