"""The operator's per-model gauges: what a plan sets, and what forgetting a model removes."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from ridgeline.api import InferenceModelSpec
from ridgeline.api.inference_model import InferenceModelStatus, ReplicaStatus
from ridgeline.planner import NodePool, plan_model
from ridgeline.shape.config_estimate import estimate_model_shape
from ridgeline_dev.checkpoints import TINY_LLAMA_CONFIG
from ridgeline_operator import metrics

LABELS = {"namespace": "metrics-test", "model": "tiny"}


def _value(name: str, **extra: str) -> float | None:
    return REGISTRY.get_sample_value(name, {**LABELS, **extra})


def test_a_plan_sets_the_predicted_gauges_and_forget_removes_them() -> None:
    spec = InferenceModelSpec.model_validate(
        {
            "model": {"uri": "file:///x"},
            "accelerators": ["cpu"],
            "workload": {"maxContextTokens": 1024},
        }
    )
    plan = plan_model(
        estimate_model_shape(TINY_LLAMA_CONFIG),
        spec,
        [NodePool(name="cpu", gpu_product="cpu", gpus_per_node=0)],
    )
    status = InferenceModelStatus(plan=plan, replicas=ReplicaStatus(desired=2, ready=1))
    metrics.observe(LABELS["namespace"], LABELS["model"], status)

    assert _value("ridgeline_operator_predicted_step_seconds") == pytest.approx(
        plan.predicted.time_per_output_token_ms / 1000
    )
    assert _value("ridgeline_operator_predicted_tokens_per_second") == pytest.approx(
        plan.predicted.tokens_per_second
    )
    assert _value("ridgeline_operator_replicas", kind="desired") == 2
    assert _value("ridgeline_operator_replicas", kind="ready") == 1

    metrics.forget(LABELS["namespace"], LABELS["model"])
    assert _value("ridgeline_operator_predicted_step_seconds") is None
    assert _value("ridgeline_operator_predicted_tokens_per_second") is None
    assert _value("ridgeline_operator_replicas", kind="desired") is None
