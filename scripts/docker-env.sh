#!/usr/bin/env bash
# Sourced by build-image.sh and test-cluster.sh: makes sure Debian's docker engine and
# debootstrap are installed and that a docker daemon answers. A daemon started here is
# recorded in DOCKERD_STARTED (its pid) so the caller can stop it with stop_dockerd.
# Needs scripts/ensure-env.sh's apt_install (source that first).

DOCKERD_STARTED="${DOCKERD_STARTED:-}"

ensure_docker() {
  if ! command -v dockerd >/dev/null 2>&1; then
    apt_install docker.io dockerd || return 1
    # The package may start its own service: stop it, the daemon below is ours to stop.
    (service docker stop || true) >/dev/null 2>&1
    sleep 1
  fi
  command -v docker >/dev/null 2>&1 || { echo "[docker] no docker client" >&2; return 1; }
  if timeout 20 docker info >/dev/null 2>&1; then return 0; fi
  local sudo=""
  [ "$(id -u)" = "0" ] || sudo="sudo"
  local log="${TMPDIR:-/tmp}/cloudburst-dockerd.log"
  echo "[docker] no daemon answers: starting dockerd (log $log)"
  $sudo sh -c "dockerd >'$log' 2>&1 & echo \$! > '${TMPDIR:-/tmp}/cloudburst-dockerd.pid'"
  DOCKERD_STARTED="$(cat "${TMPDIR:-/tmp}/cloudburst-dockerd.pid")"
  export DOCKERD_STARTED
  local i
  for i in $(seq 1 60); do
    if timeout 10 docker info >/dev/null 2>&1; then
      echo "[docker] dockerd (pid $DOCKERD_STARTED) is up"
      return 0
    fi
    sleep 1
  done
  echo "[docker] dockerd did not come up in 60 s; its log:" >&2
  tail -n 30 "$log" >&2 || true
  return 1
}

# Stops the daemon ensure_docker started (no-op when it was already running).
stop_dockerd() {
  [ -n "$DOCKERD_STARTED" ] || return 0
  local sudo=""
  [ "$(id -u)" = "0" ] || sudo="sudo"
  echo "[docker] stopping the dockerd we started (pid $DOCKERD_STARTED)"
  $sudo kill -TERM "$DOCKERD_STARTED" 2>/dev/null || true
  local i
  for i in $(seq 1 30); do
    $sudo kill -0 "$DOCKERD_STARTED" 2>/dev/null || { DOCKERD_STARTED=""; return 0; }
    sleep 1
  done
  $sudo kill -KILL "$DOCKERD_STARTED" 2>/dev/null || true
  DOCKERD_STARTED=""
}
