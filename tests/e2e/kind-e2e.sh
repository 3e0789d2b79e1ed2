#!/usr/bin/env bash
# `make e2e-kind`, for machines with Docker: kind cluster, images built and loaded, KubeRay,
# the chart, a tiny CPU model from an in-cluster MinIO, one OpenAI request. Not run in CI here.
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in docker kind kubectl helm; do command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }; done
CLUSTER=ridgeline-e2e
kind create cluster --name "$CLUSTER" --config tests/e2e/kind.yaml --wait 120s
trap 'kind delete cluster --name "$CLUSTER"' EXIT
VERSION=e2e REGISTRY=ridgeline.local ./images/build.sh
for img in operator:e2e serving:e2e-cpu; do kind load docker-image --name "$CLUSTER" "ridgeline.local/$img"; done
helm repo add kuberay https://ray-project.github.io/kuberay-helm/ && helm repo update
helm install kuberay-operator kuberay/kuberay-operator --version 1.7.0 -n kuberay --create-namespace --wait
helm install ridgeline charts/ridgeline -n ridgeline-system --create-namespace --wait \
  --set operator.image.repository=ridgeline.local/operator --set operator.image.tag=e2e \
  --set 'serving.images[0].image=ridgeline.local/serving:e2e-cpu' --set 'serving.images[0].torch=2.15.0' \
  --set 'serving.images[0].cuda=null' --set serving.weightsCacheVolume=emptyDir \
  --set-json 'nodePools=[{"name":"cpu","gpuProduct":"cpu","gpusPerNode":0}]'
.venv/bin/python -m ridgeline_dev.kind_e2e
