#!/usr/bin/env bash
# `make images`: the operator image and one serving image per line of serving/variants.txt.
# Needs a Docker engine (not available on the development machines; see README).
set -euo pipefail
cd "$(dirname "$0")/.."
REGISTRY=${REGISTRY:-ghcr.io/ridgeline}
VERSION=${VERSION:-0.1.0}
command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "make images needs a running Docker engine" >&2; exit 1; }
docker build -f images/operator/Dockerfile -t "$REGISTRY/operator:$VERSION" .
grep -v '^#' images/serving/variants.txt | while read -r tag cuda torch index; do
  [ -n "$tag" ] || continue
  base=()
  if [ "$cuda" = "-" ]; then base=(--build-arg BASE=ubuntu:22.04); else base=(--build-arg "CUDA_VERSION=$cuda"); fi
  docker build -f images/serving/Dockerfile "${base[@]}" --build-arg "TORCH_VERSION=$torch" \
    --build-arg "TORCH_INDEX=$index" -t "$REGISTRY/serving:$VERSION-$tag" .
done
