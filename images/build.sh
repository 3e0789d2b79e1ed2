#!/usr/bin/env bash
# `make images`: the operator image and one serving image per line of serving/variants.txt,
# from one recipe each (build args choose the base and the torch build). Needs Docker with
# BuildKit. The test node builds the same Dockerfiles with buildah: python -m ridgeline_dev.images
set -euo pipefail
cd "$(dirname "$0")/.."
REGISTRY=${REGISTRY:-ghcr.io/ridgeline}
VERSION=${VERSION:-0.1.0}
command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "make images needs a running Docker engine" >&2; exit 1; }
export DOCKER_BUILDKIT=1
secret=()
if [ -n "${PIP_CERT:-}" ]; then secret=(--secret "id=pipcert,src=$PIP_CERT"); fi
docker build "${secret[@]}" -f images/operator/Dockerfile -t "$REGISTRY/operator:$VERSION" .
grep -v '^#' images/serving/variants.txt | while read -r tag cuda torch index; do
  [ -n "$tag" ] || continue
  if [ "$cuda" = "-" ]; then base=debian:bookworm-slim; else base="nvidia/cuda:$cuda-base-ubuntu22.04"; fi
  docker build "${secret[@]}" -f images/serving/Dockerfile --build-arg "BASE=$base" \
    --build-arg "TORCH_VERSION=$torch" --build-arg "TORCH_INDEX=$index" \
    -t "$REGISTRY/serving:$VERSION-$tag" .
done
