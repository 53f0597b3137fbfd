#!/usr/bin/env bash
# Builds the one image of every role: scripts/build-image.sh [TAG] (default cloudburst:dev).
#
# Works on a machine that reaches only PyPI and Debian's archive:
#   - base: $BASE if set, else python:3.11-slim if it can be pulled, else a local
#     Debian bookworm base (debootstrap --variant=minbase + docker import), cached as
#     $CACHE/bookworm-minbase.tar and the image cloudburst-base:bookworm;
#   - Python dependencies: a wheelhouse built on the host (pip wheel, cached in
#     $CACHE/wheels-<hash of the dependencies>; pip download of manylinux cp311 wheels) copied into the build context (.image-wheels/),
#     installed with --no-index: nothing inside the build reaches the network.
# Installs docker.io/debootstrap with apt-get and starts dockerd when missing (the
# daemon is left running; scripts/test-cluster.sh stops one it started itself).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/ensure-env.sh"
source "$ROOT/scripts/docker-env.sh"
TAG="${1:-${CLOUDBURST_IMAGE:-cloudburst:dev}}"
CACHE="${CLOUDBURST_IMAGE_CACHE:-$HOME/.cache/cloudburst-image}"
LOCAL_BASE="cloudburst-base:bookworm"
mkdir -p "$CACHE"
# The classic builder: works with every client/daemon pair (it warns it is deprecated).
export DOCKER_BUILDKIT=0
t0=$(date +%s)

ensure_docker

make_local_base() {
  if docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then return 0; fi
  local tar="$CACHE/bookworm-minbase.tar"
  if [ ! -s "$tar" ]; then
    apt_install debootstrap debootstrap
    local dir
    dir="$(mktemp -d "${TMPDIR:-/tmp}/cb-rootfs.XXXXXX")"
    echo "[image] debootstrap --variant=minbase bookworm (a few minutes, cached in $tar)"
    local mirror
    mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
    if ! timeout 900 debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$dir" "$mirror" >"$CACHE/debootstrap.log" 2>&1; then
      tail -n 30 "$CACHE/debootstrap.log" >&2
      rm -rf "$dir"
      echo "[image] debootstrap failed (log $CACHE/debootstrap.log)" >&2
      return 1
    fi
    # Drop what an image does not need (apt lists, docs, man pages).
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/usr/share/doc/* \
      "$dir"/usr/share/man/* "$dir"/usr/share/locale/*
    tar -C "$dir" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
    rm -rf "$dir"
  fi
  echo "[image] docker import $tar as $LOCAL_BASE"
  docker import "$tar" "$LOCAL_BASE" >/dev/null
}

if [ -z "${BASE:-}" ]; then
  if docker image inspect python:3.11-slim >/dev/null 2>&1 \
      || timeout 60 docker pull -q python:3.11-slim >/dev/null 2>&1; then
    BASE=python:3.11-slim
  else
    echo "[image] python:3.11-slim cannot be pulled: using a local Debian base"
    make_local_base
    BASE="$LOCAL_BASE"
  fi
fi

# The wheelhouse: the runtime dependencies of pyproject.toml and of its extras the
# image's roles need (autoscale: the `kubernetes` client of the autoscaler's Kubernetes
# actuator, deploy/k8s/base/autoscaler.yaml), for the image's Python (3.11,
# manylinux). Keyed by the dependency list, so a change rebuilds it.
reqs="$("$PY" - "$ROOT/pyproject.toml" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = project["optional-dependencies"]
print("\n".join([*project["dependencies"], *extras["autoscale"]]))
PY
)"
key="$(printf '%s' "$reqs" | sha256sum | cut -c1-16)"
wheels="$CACHE/wheels-$key"
if [ ! -f "$wheels/.complete" ]; then
  echo "[image] building the wheelhouse in $wheels"
  rm -rf "$wheels" && mkdir -p "$wheels"
  printf '%s\n' "$reqs" > "$wheels/requirements.txt"
  # pip evaluates python_full_version markers for the host's Python, not the target:
  # what bookworm's 3.11.2 needs beyond a later 3.11 is listed by hand.
  printf '%s\n' "$reqs" "async-timeout>=4.0.3" > "$wheels/download.txt"
  timeout 900 "$PY" -m pip download -q --disable-pip-version-check --only-binary=:all: \
    --python-version 3.11 --implementation cp --platform "manylinux2014_$(uname -m)" \
    --platform "manylinux_2_17_$(uname -m)" --platform "manylinux_2_28_$(uname -m)" \
    -d "$wheels" -r "$wheels/download.txt"
  touch "$wheels/.complete"
fi
rm -rf "$ROOT/.image-wheels"
cp -r "$wheels" "$ROOT/.image-wheels"
trap 'rm -rf "$ROOT/.image-wheels"' EXIT

echo "[image] docker build -t $TAG (BASE=$BASE)"
previous="$(docker image inspect -f '{{.Id}}' "$TAG" 2>/dev/null || true)"
version="$("$PY" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$ROOT/pyproject.toml")"
timeout 900 docker build -q --force-rm --build-arg BASE="$BASE" --build-arg VERSION="$version" -t "$TAG" "$ROOT" >/dev/null
# The image this build replaced: removed when nothing else uses it (no growth per run).
if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect -f '{{.Id}}' "$TAG")" ]; then
  docker rmi "$previous" >/dev/null 2>&1 || true
fi
size=$(docker image inspect -f '{{.Size}}' "$TAG")
echo "[image] $TAG built in $(( $(date +%s) - t0 )) s, $(( size / 1024 / 1024 )) MiB"
