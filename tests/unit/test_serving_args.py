"""The operator/serving-image contract: versioned, old documents load, unknown fields are
ignored with a warning, and what the replica needs travels in it."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from ridgeline.api import InferenceModel
from ridgeline.api.serving_args import SCHEMA_VERSION, ServingArgs, deployment_options
from ridgeline.planner import NodePool, memory, plan_model
from ridgeline.platform_config import default_config
from ridgeline.render.groups import REPLICA_RESOURCE
from ridgeline.render.rayservice import serve_config, serving_args_for

V1 = Path(__file__).parent / "fixtures" / "serving_args_v1.json"


def test_a_document_from_the_previous_release_still_loads() -> None:
    args = ServingArgs.model_validate(json.loads(V1.read_text()))
    assert args.schema_version == 1
    # what version 1 replicas did, from defaults
    assert args.prefill_chunk_tokens == 2048
    assert args.usable_memory_fraction == 0.90
    assert args.num_cpus == 1
    assert args.kv_sequences == args.max_batch_size
    assert args.max_ongoing_requests == 120 + 480 + 8


def test_unknown_fields_from_a_newer_operator_are_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    doc = {**json.loads(V1.read_text()), "schema_version": 99, "speculative_tokens": 4}
    with caplog.at_level(logging.WARNING, logger="ridgeline.serving"):
        args = ServingArgs.model_validate(doc)
    assert args.schema_version == 99
    assert "speculative_tokens" in caplog.text
    assert not hasattr(args, "speculative_tokens")


def test_the_operator_sends_every_constant_the_replica_needs(shape_of) -> None:  # type: ignore[no-untyped-def]
    model = InferenceModel.model_validate(
        {
            "apiVersion": "ridgeline.dev/v1alpha1",
            "kind": "InferenceModel",
            "metadata": {"name": "m", "namespace": "default"},
            "spec": {"model": {"uri": "s3://models/m"}, "workload": {"maxContextTokens": 4096}},
        }
    )
    pool = NodePool(name="h100", gpu_product="NVIDIA-H100-80GB-HBM3", gpus_per_node=8)
    plan = plan_model(shape_of("llama-3.1-8b"), model.spec, [pool])
    args = serving_args_for(model, plan, default_config().weights_cache_dir)
    assert args.schema_version == SCHEMA_VERSION
    assert args.max_batch_by_memory == plan.max_batch_by_memory
    assert args.kv_sequences >= args.max_batch_size
    assert args.prefill_chunk_tokens == memory.PREFILL_CHUNK_TOKENS
    assert args.usable_memory_fraction == memory.USABLE_MEMORY_FRACTION
    assert args.planned_step_seconds == pytest.approx(
        plan.predicted.time_per_output_token_ms / 1000
    )
    app = serve_config(model, plan, default_config())["applications"][0]
    deployment = app["deployments"][0]
    options = deployment_options(args, REPLICA_RESOURCE)
    assert {k: deployment[k] for k in options} == options
    assert deployment["max_ongoing_requests"] == args.max_ongoing_requests
    assert deployment["ray_actor_options"]["num_cpus"] == args.num_cpus
    assert ServingArgs.model_validate(app["args"]) == args


def test_ridgeline_serve_deploys_with_the_options_the_cluster_gets() -> None:
    from ridgeline_serving.app import build_app

    args = ServingArgs.model_validate(json.loads(V1.read_text()))
    deployment = build_app(args.model_dump(mode="json"))._bound_deployment
    options = deployment_options(args)
    assert deployment.max_ongoing_requests == options["max_ongoing_requests"]
    assert deployment.ray_actor_options == options["ray_actor_options"]


def test_a_retired_field_is_accepted_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    doc = json.loads(V1.read_text())
    assert "batch_wait_timeout_s" in doc  # version 1 operators sent it
    with caplog.at_level(logging.WARNING, logger="ridgeline.serving"):
        ServingArgs.model_validate(doc)
    assert caplog.text == ""


def test_the_core_imports_no_serving_module() -> None:
    """The operator image renders the contract without the serving app installed."""
    code = (
        "import sys, ridgeline.render, ridgeline.api.serving_args;"
        "print(sorted(m for m in sys.modules if m.startswith('ridgeline_serving')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
