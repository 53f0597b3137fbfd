#!/usr/bin/env bash
# Regenerates the Python protobuf modules from proto/*.proto.
# Usage: scripts/gen-protos.sh [OUTPUT_ROOT]   (default: the repository root)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root}"
py="${PYTHON:-$root/.venv/bin/python}"
mkdir -p "$out/anna/proto" "$out/cloudburst/shared/proto"
"$py" -m grpc_tools.protoc -I"$root/proto" --python_out="$out/anna/proto" --pyi_out="$out/anna/proto" "$root/proto/anna.proto"
"$py" -m grpc_tools.protoc -I"$root/proto" --python_out="$out/cloudburst/shared/proto" --pyi_out="$out/cloudburst/shared/proto" "$root/proto/cloudburst.proto"
