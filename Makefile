# Ridgeline: `make demo` runs the main job, `make test` runs every test tier this machine can run.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CACHE ?= $(CURDIR)/.cache
EXTRAS ?= dev

.PHONY: help venv test lint typecheck unit crds chart-docs demo plans bench bench-gpu images images-node e2e-kind clean cluster-bin cluster-up cluster-down fleet
CLUSTER_DIR ?= $(CACHE)/cluster
POOLS ?= examples/pools.yaml

help:
	@echo "make demo       the main job: serve a tiny model from a local object store, ask it"
	@echo "make plans      ridgeline plan on every example"
	@echo "make bench      benchmarks; figures go to docs/benchmarks.md"
	@echo "make bench-gpu  on a GPU: the engine eager against CUDA graphs, one run of a few minutes"
	@echo "make test       ruff, mypy and pytest (creates $(VENV) on first use)"
	@echo "make crds       regenerate crds/ from the pydantic models"
	@echo "make cluster-up     etcd, kube-apiserver, controller-manager, scheduler, kwok, KubeRay, MinIO on loopback"
	@echo "make cluster-up REAL_NODE=1   ... and a real node (containerd, kubelet, CNI, kube-proxy, CoreDNS; root)"
	@echo "make cluster-up REAL_NODE=1 IMAGES=1   ... with the operator and CPU serving images imported"
	@echo "make images-node    the operator and CPU serving images with buildah, for the real node"
	@echo "make cluster-down   stop exactly those processes"
	@echo "make fleet POOLS=examples/pools.yaml   fake GPU nodes from a pools file"

# The venv is rebuilt when pyproject.toml or the serving image's library pins change; pip's
# cache (~/.cache/pip) makes that fast. The tests run the libraries the serving image ships.
SERVING_PINS := images/serving/constraints.txt
$(VENV)/.stamp-$(EXTRAS): pyproject.toml $(SERVING_PINS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(SERVING_PINS) -e '.[$(EXTRAS)]'
	touch $@

venv: $(VENV)/.stamp-$(EXTRAS)

# lint-imports: the layering contract in pyproject.toml (the pure core imports no I/O, the core
# neither app).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(VENV)/bin/pytest tests/unit

test: lint typecheck
	./tests/e2e/ensure-prometheus.sh
	./tests/e2e/ensure-node.sh
	# A crash in native code (even at exit, after the summary) prints every thread's stack.
	PYTHONFAULTHANDLER=1 $(VENV)/bin/pytest --durations=25

crds: venv
	$(PY) -m ridgeline.write_crd crds/ridgeline.dev_inferencemodels.yaml docs/crd-reference.md
	cp crds/ridgeline.dev_inferencemodels.yaml charts/ridgeline/crds/

chart-docs: venv
	$(PY) -m ridgeline_dev.chart_docs

# The main job: a tiny model made on the spot, in a local object store, served by
# `ridgeline serve` on local Ray, asked a question with the openai client.
demo: venv
	$(PY) -m ridgeline_dev.demo

# Figures and ratios, written to docs/benchmarks.md. The GPU section runs only where CUDA is.
bench: venv
	cd tests/bench && ../../$(PY) bench_serving.py
	cd tests/bench && ../../$(PY) bench_hostile.py
	cd tests/bench && ../../$(PY) bench_guidellm.py
	cd tests/bench && ../../$(PY) bench_engine.py
	cd tests/bench && ../../$(PY) bench_kv_passes.py
	cd tests/bench && ../../$(PY) bench_cpu_steps.py
	cd tests/bench && ../../$(PY) bench_gpu.py
	cd tests/bench && ../../$(PY) bench_gpu_engines.py
	cd tests/bench && ../../$(PY) bench_operator.py

# On an NVIDIA GPU, one run of at most 8 minutes: the decode step eager against CUDA graphs
# (1.1B and 8B shapes, bf16, nf4, int8), a closed loop of mixed lengths, the KV passes at 1k-8k
# context. Needs torch and transformers (bitsandbytes for the nf4 and int8 rows), not Ray.
bench-gpu: venv
	cd tests/bench && ../../$(PY) bench_gpu_graphs.py

# Container images (needs Docker): the operator and one serving image per CUDA version.
images:
	./images/build.sh

# The same Dockerfiles with buildah on a debootstrap base, saved under ~/.cache/ridgeline/images
# (keyed by their inputs) for the real test node; no Docker, no registry.
images-node: venv
	./tests/e2e/ensure-node.sh
	$(PY) -m ridgeline_dev.images

# Full stack on kind (needs Docker, kind, kubectl, helm): images, KubeRay, chart, a tiny model.
e2e-kind: venv
	./tests/e2e/kind-e2e.sh

# `ridgeline plan` on every example against examples/pools.yaml.
DEMO_MODELS := $(CACHE)/demo-models
plans: venv
	$(PY) -m ridgeline_dev.demo_plans --examples examples --models $(DEMO_MODELS)

# Builds kube-apiserver & co, etcd, kwok, KubeRay, helm and MinIO from the Go module proxy into
# ~/.cache/ridgeline/bin (keyed by each tools/*/go.sum); a second run is a no-op.
cluster-bin: venv
	$(PY) -m ridgeline_dev.toolchain

ifdef KIND
cluster-up:
	kind create cluster --name ridgeline --config tests/e2e/kind.yaml
	kubectl apply --server-side -f crds/ $$($(PY) -m ridgeline_dev.cluster kuberay-crds | sed 's/^/-f /')
	@echo "export KUBECONFIG=$$HOME/.kube/config"
cluster-down:
	kind delete cluster --name ridgeline
else
cluster-up: venv
	$(if $(REAL_NODE),./tests/e2e/ensure-node.sh)
	$(PY) -m ridgeline_dev.cluster up --workdir $(CLUSTER_DIR) $(if $(REAL_NODE),--real-node) $(if $(IMAGES),--images)
cluster-down: venv
	$(PY) -m ridgeline_dev.cluster down --workdir $(CLUSTER_DIR)
endif

fleet: venv
	$(PY) -m ridgeline_dev.fleet $(POOLS) --kubeconfig $(CLUSTER_DIR)/kubeconfig \
	  --kubectl $$($(PY) -c 'from ridgeline_dev.toolchain import MODULES; print(MODULES[0].bin_dir)')/kubectl

clean:
	rm -rf $(VENV) $(CACHE) .mypy_cache .ruff_cache .pytest_cache
