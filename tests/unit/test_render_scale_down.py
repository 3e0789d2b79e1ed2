"""The idle time before scale-down (to zero with ``replicas.min: 0``): Serve's delay comes from
``spec.replicas.scaleDownDelaySeconds``, the worker pod's idle timeout stays fixed, so changing
the delay changes the Serve config only and never replaces the Ray cluster."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from ridgeline.api import InferenceModel
from ridgeline.api.inference_model import DEFAULT_SCALE_DOWN_DELAY_S, POD_IDLE_S
from ridgeline.compat import choose_image
from ridgeline.planner import NodePool, plan_model
from ridgeline.platform_config import default_config
from ridgeline.render import build_rayservice
from ridgeline.render.rayservice import CLUSTER_HASH

CPU = NodePool(name="cpu", gpu_product="cpu", gpus_per_node=0, cpus=8, memory_gib=32)


def _model(replicas: dict[str, Any]) -> InferenceModel:
    return InferenceModel.model_validate(
        {
            "metadata": {"name": "m", "namespace": "ns"},
            "spec": {
                "model": {"uri": "s3://models/m"},
                "accelerators": ["cpu"],
                "workload": {"maxContextTokens": 1024},
                "replicas": replicas,
            },
        }
    )


def _render(shape_of, replicas: dict[str, Any]) -> dict[str, Any]:
    config = default_config()
    model = _model(replicas)
    plan = plan_model(shape_of("tiny-llama"), model.spec, [CPU])
    placement = choose_image(config, CPU, model.spec.quantization)
    return build_rayservice(model, plan, placement, config, uid="u1", pool=CPU)


def _autoscaling(rs: dict[str, Any]) -> dict[str, Any]:
    app = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]
    config: dict[str, Any] = app["deployments"][0]["autoscaling_config"]
    return config


def test_scale_down_delay_reaches_serve_and_defaults_below_rays(shape_of) -> None:
    default = _autoscaling(_render(shape_of, {"min": 0, "max": 2}))
    assert default["downscale_delay_s"] == DEFAULT_SCALE_DOWN_DELAY_S < 600
    short = _autoscaling(_render(shape_of, {"min": 0, "max": 2, "scaleDownDelaySeconds": 15}))
    assert short == {**default, "downscale_delay_s": 15}
    assert short["min_replicas"] == 0
    assert short["initial_replicas"] == 1  # starts warm, goes to zero only once idle


def test_scale_down_delay_leaves_the_ray_cluster_alone(shape_of) -> None:
    slow = _render(shape_of, {"min": 0, "max": 2, "scaleDownDelaySeconds": 900})
    fast = _render(shape_of, {"min": 0, "max": 2, "scaleDownDelaySeconds": 5})
    for rs in (slow, fast):
        options = rs["spec"]["rayClusterConfig"]["autoscalerOptions"]
        assert options["idleTimeoutSeconds"] == POD_IDLE_S
    assert slow["spec"]["rayClusterConfig"] == fast["spec"]["rayClusterConfig"]
    assert (
        slow["metadata"]["annotations"][CLUSTER_HASH]
        == fast["metadata"]["annotations"][CLUSTER_HASH]
    )
    assert slow["spec"]["serveConfigV2"] != fast["spec"]["serveConfigV2"]


@pytest.mark.parametrize("seconds", [-1, 86_401])
def test_scale_down_delay_is_bounded(seconds: int) -> None:
    with pytest.raises(ValidationError, match=r"scaleDownDelaySeconds|scale_down_delay_seconds"):
        _model({"min": 0, "max": 1, "scaleDownDelaySeconds": seconds})
