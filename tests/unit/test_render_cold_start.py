"""The wait bound for a starting model reaches Serve's proxies: the operator's decision puts
the plan's bound and predicted cold start on the head's and the workers' Ray containers (the
proxy, not the replica, holds a request while no replica runs), under the names the proxy's
middleware reads."""

from __future__ import annotations

from typing import Any

import yaml

from ridgeline import cold_start
from ridgeline.api import InferenceModel
from ridgeline.compat import choose_image
from ridgeline.controller import Observed, decide
from ridgeline.planner import NodePool, plan_model
from ridgeline.platform_config import default_config
from ridgeline.render import build_rayservice, pods
from ridgeline_serving import cold_start_guard

H100 = NodePool(
    name="h100", gpu_product="NVIDIA-H100-80GB-HBM3", gpus_per_node=8, driver_version="550.54.15"
)
MODEL = InferenceModel.model_validate(
    {
        "metadata": {"name": "m", "namespace": "ns"},
        "spec": {
            "model": {"uri": "s3://models/m"},
            "workload": {"maxContextTokens": 1024},
            "replicas": {"min": 0, "max": 2},
        },
    }
)


def _envs(rayservice: dict[str, Any]) -> list[dict[str, str]]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [
        {e["name"]: e.get("value") for e in g["template"]["spec"]["containers"][0]["env"]}
        for g in groups
    ]


def test_the_wait_bound_and_prediction_reach_the_head_and_the_workers(shape_of) -> None:
    obs = Observed(
        model=MODEL,
        generation=1,
        uid="u1",
        pools=[H100],
        shape=shape_of("llama-3.1-8b"),
        shape_error=None,
        rayservice=None,
    )
    decision = decide(obs, default_config(), "t")
    cold = decision.status.plan.cold_start
    assert cold is not None
    app = yaml.safe_load(decision.apply["spec"]["serveConfigV2"])["applications"][0]
    head, worker = _envs(decision.apply)
    for env in (head, worker):
        # the same figures the replicas get in ServingArgs
        assert float(env[cold_start_guard.WAIT_ENV]) == app["args"]["cold_start_wait_s"]
        assert float(env[cold_start_guard.PREDICTED_ENV]) == app["args"]["predicted_cold_start_s"]
        assert float(env[cold_start_guard.WAIT_ENV]) == cold_start.wait_bound_seconds(cold)
        bound = cold_start_guard.ColdStartBound.from_env(env)
        assert bound == cold_start_guard.ColdStartBound(
            cold_start.wait_bound_seconds(cold), cold.seconds
        )


def test_no_prediction_no_bound(shape_of) -> None:
    """A plan without a predicted cold start (``ridgeline render``) sets none: requests wait."""
    shape = shape_of("tiny-llama")
    config = default_config()
    plan = plan_model(shape, MODEL.spec, [H100])
    assert plan.cold_start is None
    placement = choose_image(config, H100, MODEL.spec.quantization)
    rendered = build_rayservice(MODEL, plan, placement, config, pool=H100)
    for env in _envs(rendered):
        assert cold_start_guard.WAIT_ENV not in env
        assert cold_start_guard.ColdStartBound.from_env(env) is None


def test_the_operator_and_the_proxy_name_the_variables_alike() -> None:
    assert pods.COLD_START_WAIT_ENV == cold_start_guard.WAIT_ENV
    assert pods.PREDICTED_COLD_START_ENV == cold_start_guard.PREDICTED_ENV
