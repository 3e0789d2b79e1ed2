"""The operator's price gauge: a replica-hour's price beside the predicted step time, only for a
plan on a priced pool, and gone when the model re-plans onto an unpriced one or is forgotten."""

from __future__ import annotations

from prometheus_client import REGISTRY

from ridgeline.api import InferenceModelSpec
from ridgeline.api.inference_model import InferenceModelStatus
from ridgeline.planner import NodePool, plan_model
from ridgeline.shape.config_estimate import estimate_model_shape
from ridgeline_dev.checkpoints import TINY_LLAMA_CONFIG
from ridgeline_operator import metrics

LABELS = {"namespace": "cost-metrics-test", "model": "tiny"}
PRICE = "ridgeline_operator_replica_hour_price"


def _status(price: float | None) -> InferenceModelStatus:
    spec = InferenceModelSpec.model_validate(
        {
            "model": {"uri": "file:///x"},
            "accelerators": ["cpu"],
            "workload": {"maxContextTokens": 1024},
        }
    )
    pool = NodePool(name="cpu", gpu_product="cpu", gpus_per_node=0, price_per_node_hour=price)
    return InferenceModelStatus(
        plan=plan_model(estimate_model_shape(TINY_LLAMA_CONFIG), spec, [pool])
    )


def test_the_price_of_a_replica_hour_is_exported_per_model() -> None:
    metrics.observe(LABELS["namespace"], LABELS["model"], _status(0.36))
    assert REGISTRY.get_sample_value(PRICE, LABELS) == 0.36
    metrics.observe(LABELS["namespace"], LABELS["model"], _status(None))
    assert REGISTRY.get_sample_value(PRICE, LABELS) is None
    metrics.observe(LABELS["namespace"], LABELS["model"], _status(0.5))
    metrics.forget(LABELS["namespace"], LABELS["model"])
    assert REGISTRY.get_sample_value(PRICE, LABELS) is None
