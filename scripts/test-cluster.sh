#!/usr/bin/env bash
# The multi-container test (run by .ci/run after the unit suite): builds the image
# (scripts/build-image.sh), starts deploy/compose/'s cluster through the docker SDK and
# runs tests/cluster from the host (README example, composition DAG, 1e6-float
# reference, storage kill under write load, executor kill). Starts dockerd when none
# runs (and stops it at the end); removes every container, network and volume it made,
# also on failure or interruption. Every step has a timeout.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
source "$ROOT/scripts/ensure-env.sh"
source "$ROOT/scripts/docker-env.sh"
IMAGE="${CB_CLUSTER_IMAGE:-cloudburst:dev}"
PROJECT="cbtest$$"
TIMINGS="$(mktemp)"
t0=$(date +%s)

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  echo "[cluster] removing project $PROJECT"
  timeout 180 "$PY" deploy/compose/sdk_compose.py down -p "$PROJECT" >/dev/null 2>&1 \
    || echo "[cluster] cleanup of $PROJECT failed" >&2
  local left
  left="$(timeout 60 docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"; \
    timeout 60 docker network ls -q --filter "label=com.docker.compose.project=$PROJECT"; \
    timeout 60 docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")" || true
  if [ -n "$left" ]; then
    echo "[cluster] left behind by $PROJECT: $left" >&2
    [ "$rc" != 0 ] || rc=1
  fi
  stop_dockerd
  rm -f "$TIMINGS"
  echo "[cluster] done in $(( $(date +%s) - t0 )) s (exit $rc)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_docker
# Leftovers of an earlier run that was killed (its script's pid is gone): remove them.
for old in $(timeout 60 docker ps -a --filter label=com.docker.compose.project \
    --format '{{.Label "com.docker.compose.project"}}' | sort -u); do
  case "$old" in
    cbtest[0-9]*) kill -0 "${old#cbtest}" 2>/dev/null && continue
      echo "[cluster] removing leftovers of $old"
      timeout 180 "$PY" deploy/compose/sdk_compose.py down -p "$old" >/dev/null || true ;;
  esac
done
timeout 1200 "$ROOT/scripts/build-image.sh" "$IMAGE"
built=$(date +%s)
echo "[cluster] image $IMAGE: $(( $(docker image inspect -f '{{.Size}}' "$IMAGE") / 1024 / 1024 )) MiB"

CB_CLUSTER_TESTS=1 CB_CLUSTER_IMAGE="$IMAGE" CB_CLUSTER_PROJECT="$PROJECT" \
  CB_CLUSTER_TIMINGS="$TIMINGS" \
  timeout 1200 "$PY" -m pytest tests/cluster -x -q -s -p no:cacheprovider "$@"
if [ -s "$TIMINGS" ]; then
  first=$(cut -d. -f1 "$TIMINGS")
  echo "[cluster] cold start (image built to first answered call): $(( first - built )) s"
fi
