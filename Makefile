# Ridgeline: `make demo` runs the main job, `make test` runs every test tier this machine can run.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CACHE ?= $(CURDIR)/.cache
EXTRAS ?= dev

.PHONY: help venv test lint typecheck unit crds demo clean

help:
	@echo "make demo       plan the examples (the main job)"
	@echo "make test       ruff, mypy and pytest (creates $(VENV) on first use)"
	@echo "make crds       regenerate crds/ from the pydantic models"

# The venv is rebuilt when pyproject.toml changes; pip's cache (~/.cache/pip) makes that fast.
$(VENV)/.stamp-$(EXTRAS): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

venv: $(VENV)/.stamp-$(EXTRAS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(VENV)/bin/pytest tests/unit

test: lint typecheck
	$(VENV)/bin/pytest

crds: venv
	$(PY) -m ridgeline.api.crd crds/ridgeline.dev_inferencemodels.yaml docs/crd-reference.md

DEMO_MODELS := $(CACHE)/demo-models
demo: venv
	$(PY) -m ridgeline_dev.demo_plans --examples examples --models $(DEMO_MODELS)

clean:
	rm -rf $(VENV) $(CACHE) .mypy_cache .ruff_cache .pytest_cache
