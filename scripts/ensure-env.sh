#!/usr/bin/env bash
# Sourced by the other scripts: makes sure .venv exists and holds the project with
# its test extras, reinstalling only when pyproject.toml changed. Prints what it does.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
EXTRAS="${CLOUDBURST_EXTRAS:-test}"

if [ ! -x "$PY" ]; then
  echo "[setup] creating virtual environment in $VENV"
  python3 -m venv "$VENV" || { echo "[setup] python3 -m venv failed: install python3-venv (Python >= 3.11)" >&2; exit 1; }
fi
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "[setup] Python >= 3.11 is required, found $("$PY" --version)" >&2; exit 1; }

stamp="$VENV/.cloudburst-installed"
want="$(cat "$ROOT/pyproject.toml" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)-$EXTRAS"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing cloudburst-py[$EXTRAS] into $VENV (first run takes a minute)"
  "$PY" -m pip install -q --disable-pip-version-check -U pip >/dev/null
  log="$(mktemp)"
  if ! "$PY" -m pip install -q --disable-pip-version-check -e "$ROOT[$EXTRAS]" >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"
    echo "[setup] pip install failed (see above)" >&2; exit 1
  fi
  rm -f "$log"
  echo "$want" > "$stamp"
fi

# Installs Debian package $1 (providing command $2) when the command is missing.
apt_install() {
  local pkg="$1" cmd="$2"
  if command -v "$cmd" >/dev/null 2>&1; then return 0; fi
  local sudo=""
  if [ "$(id -u)" != "0" ]; then
    command -v sudo >/dev/null 2>&1 || { echo "[setup] $pkg is missing and cannot be installed here" >&2; return 1; }
    sudo="sudo"
  fi
  command -v apt-get >/dev/null 2>&1 || { echo "[setup] $pkg is missing and there is no apt-get" >&2; return 1; }
  echo "[setup] installing $pkg with ${sudo:+sudo }apt-get"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq "$pkg" >/dev/null
}

# redis-server is the baseline of the benchmarks and of a few tests.
ensure_redis() {
  command -v redis-server >/dev/null 2>&1 && return 0
  apt_install redis-server redis-server || return 1
  # Debian starts the service on install; we run our own instances on free ports.
  (service redis-server stop || true) >/dev/null 2>&1
}

# iproute2's ip makes the network namespaces of the network-fault test.
ensure_iproute2() {
  apt_install iproute2 ip
}
