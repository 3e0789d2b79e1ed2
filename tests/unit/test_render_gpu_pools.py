"""A real GPU cluster (issue 29): declared pools that scale from zero select on their template's
labels, pods sized to real instance shapes, a head that claims no GPU, replicas that drain,
the runtime class, the serve port KubeRay probes, the cold start, and the kubelet disk."""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from ridgeline.api import InferenceModel
from ridgeline.api.serving_args import ServingArgs
from ridgeline.compat import choose_image
from ridgeline.controller import Observed, Result, decide
from ridgeline.instance_shapes import SHAPES, smallest_per_gpu
from ridgeline.planner import NodePool, plan_model
from ridgeline.platform_config import PlatformConfig, default_config
from ridgeline.render import build_rayservice
from ridgeline.render.rayservice import DRAIN_CAP_S, DRAIN_FLOOR_S, drain_seconds
from ridgeline.shape import ModelShape

GKE_L4 = {"cloud.google.com/gke-accelerator": "nvidia-l4", "team.example/pool": "l4"}
DECLARED_L4 = NodePool(
    name="l4-from-zero",
    gpu_product="NVIDIA-L4",
    gpus_per_node=1,
    driver_version="550.54.15",
    node_labels=GKE_L4,
    tolerations=[{"key": "team.example/gpu", "operator": "Exists", "effect": "NoSchedule"}],
)
H100 = NodePool(
    name="h100", gpu_product="NVIDIA-H100-80GB-HBM3", gpus_per_node=8, driver_version="550.54.15"
)
CPU = NodePool(name="cpu", gpu_product="cpu", gpus_per_node=0, cpus=8, memory_gib=32)


def _model(**spec: Any) -> InferenceModel:
    return InferenceModel.model_validate(
        {
            "metadata": {"name": "m", "namespace": "ns"},
            "spec": {"model": {"uri": "s3://models/m"}, **spec},
        }
    )


def _render(
    shape: ModelShape, pool: NodePool, config: PlatformConfig | None = None, **spec: Any
) -> dict[str, Any]:
    config = config or default_config()
    model = _model(**{"workload": {"maxContextTokens": 1024}, **spec})
    plan = plan_model(shape, model.spec, [pool])
    placement = choose_image(config, pool, model.spec.quantization)
    return build_rayservice(
        model, plan, placement, config, pool=pool, checkpoint_bytes=shape.checkpoint_bytes
    )


def _group(rs: dict[str, Any], head: bool = False) -> dict[str, Any]:
    cluster = rs["spec"]["rayClusterConfig"]
    group: dict[str, Any] = cluster["headGroupSpec"] if head else cluster["workerGroupSpecs"][0]
    return group


def _pod(rs: dict[str, Any], head: bool = False) -> dict[str, Any]:
    pod: dict[str, Any] = _group(rs, head)["template"]["spec"]
    return pod


def _deployment(rs: dict[str, Any]) -> dict[str, Any]:
    app = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]
    deployment: dict[str, Any] = app["deployments"][0]
    return deployment


def _terms(pod: dict[str, Any]) -> list[list[dict[str, Any]]]:
    affinity = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    return [t["matchExpressions"] for t in affinity["nodeSelectorTerms"]]


# ---- 1. declared pools select on their template's labels -----------------------------------


def test_a_declared_pool_selects_on_its_node_labels_only(shape_of) -> None:
    pod = _pod(_render(shape_of("tiny-llama"), DECLARED_L4))
    # one term, the template's labels: nothing a node gets only once GFD runs on it
    assert _terms(pod) == [
        [
            {"key": "cloud.google.com/gke-accelerator", "operator": "In", "values": ["nvidia-l4"]},
            {"key": "team.example/pool", "operator": "In", "values": ["l4"]},
        ]
    ]
    assert DECLARED_L4.tolerations[0] in pod["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]


def test_a_discovered_pool_keeps_gfd_product_and_driver_terms(shape_of) -> None:
    terms = _terms(_pod(_render(shape_of("tiny-llama"), H100)))
    keys = {e["key"] for t in terms for e in t}
    assert "nvidia.com/gpu.product" in keys
    assert "nvidia.com/cuda.driver-version.major" in keys
    assert "nvidia.com/cuda.driver.major" in keys


def test_the_chart_values_take_node_labels_and_tolerations() -> None:
    config = PlatformConfig.model_validate(
        {
            **default_config().model_dump(by_alias=True, exclude={"node_pools"}),
            "nodePools": [
                {
                    "name": "l4",
                    "gpuProduct": "NVIDIA-L4",
                    "gpusPerNode": 1,
                    "driverVersion": "550.54.15",
                    "nodeLabels": GKE_L4,
                    "tolerations": DECLARED_L4.tolerations,
                    "ephemeralStorageGiB": 100,
                }
            ],
        }
    )
    [pool] = config.node_pools
    assert pool.node_labels == GKE_L4
    assert pool.declared_by_labels
    assert pool.ephemeral_storage_gib == 100


# ---- 2. sizes that fit real instance shapes ------------------------------------------------


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_an_unsized_declared_pool_never_asks_more_than_its_smallest_shape(
    shape_of, name: str
) -> None:
    from ridgeline.hardware import GPUS

    product = next(g.gfd_products[0] for g in GPUS if g.name == name)
    pool = NodePool(name="p", gpu_product=product, gpus_per_node=8, driver_version="570.124.06")
    limits = _pod(_render(shape_of("tiny-llama"), pool))["containers"][0]["resources"]["limits"]
    gpus = int(limits["nvidia.com/gpu"])
    for shape in SHAPES[name]:
        assert int(limits["cpu"]) <= shape.vcpus / shape.gpus * gpus, shape
        assert int(limits["memory"].removesuffix("Gi")) <= shape.memory_gib / shape.gpus * gpus


def test_an_unsized_l4_pool_fits_a_g2_standard_4() -> None:
    from ridgeline.render.pods import gpu_worker_resources

    # GKE g2-standard-4 / AWS g6.xlarge: 4 vCPU, 16 GiB; less the kubelet's reserve and 10%
    assert gpu_worker_resources(1, DECLARED_L4, default_config()) == {
        "cpu": "3",
        "memory": "11Gi",
        "nvidia.com/gpu": "1",
    }
    shape = smallest_per_gpu("NVIDIA-L4")
    assert shape is not None
    assert shape.shape == "GKE g2-standard-4"


def test_an_unsized_pool_of_a_gpu_without_shapes_is_refused_saying_what_to_add() -> None:
    pool = {"name": "t4", "gpuProduct": "Tesla-T4", "gpusPerNode": 1, "driverVersion": "550.54.15"}
    images = [i.model_dump(by_alias=True) for i in default_config().images]
    with pytest.raises(ValidationError, match="pool t4: add cpus and memoryGiB") as err:
        PlatformConfig.model_validate({"images": images, "nodePools": [pool]})
    assert "Tesla-T4" in str(err.value)
    sized = {**pool, "cpus": 4, "memoryGiB": 15}
    PlatformConfig.model_validate({"images": images, "nodePools": [sized]})


# ---- 3. the head claims no GPU --------------------------------------------------------------


def test_the_head_claims_no_gpu_and_goes_where_the_chart_says(shape_of) -> None:
    config = default_config().model_copy(
        update={
            "head_node_selector": {"pool": "system"},
            "head_tolerations": [{"key": "system", "operator": "Exists"}],
            "runtime_class_name": "nvidia",
        }
    )
    rs = _render(shape_of("tiny-llama"), H100, config)
    head = _group(rs, head=True)
    assert head["rayStartParams"]["num-gpus"] == "0"
    assert head["rayStartParams"]["num-cpus"] == "0"
    pod = head["template"]["spec"]
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"} in pod["containers"][0]["env"]
    assert pod["nodeSelector"] == {"pool": "system"}
    assert {"key": "system", "operator": "Exists"} in pod["tolerations"]
    assert "runtimeClassName" not in pod  # it needs no GPU runtime
    assert "nodeSelector" not in _pod(_render(shape_of("tiny-llama"), H100), head=True)


# ---- 4. draining -----------------------------------------------------------------------------


def test_a_stopping_replica_drains_for_the_longest_answer_at_the_planned_step(shape_of) -> None:
    shape = shape_of("llama-3.1-8b")
    model = _model(workload={"maxContextTokens": 2048})
    plan = plan_model(shape, model.spec, [H100])
    longest = 2048 * plan.predicted.time_per_output_token_ms / 1000
    assert DRAIN_FLOOR_S < longest < DRAIN_CAP_S  # the middle of the range: exact
    rs = _render(shape, H100, workload={"maxContextTokens": 2048})
    assert _deployment(rs)["graceful_shutdown_timeout_s"] == math.ceil(longest)

    slow = plan.model_copy(
        update={"predicted": plan.predicted.model_copy(update={"time_per_output_token_ms": 299})}
    )
    assert drain_seconds(model, slow) == DRAIN_CAP_S  # 2048 x 0.299 s, capped
    fast = plan.model_copy(
        update={"predicted": plan.predicted.model_copy(update={"time_per_output_token_ms": 1})}
    )
    assert drain_seconds(model, fast) == DRAIN_FLOOR_S


def test_the_drain_is_valid_for_ray_serve(shape_of) -> None:
    from ray.serve.schema import ServeDeploySchema

    rs = _render(shape_of("tiny-llama"), H100)
    parsed = ServeDeploySchema.model_validate(yaml.safe_load(rs["spec"]["serveConfigV2"]))
    assert parsed.applications[0].deployments[0].graceful_shutdown_timeout_s == DRAIN_FLOOR_S


# ---- 6. runtime class, 8. ports --------------------------------------------------------------


def test_the_runtime_class_reaches_gpu_workers_only(shape_of) -> None:
    config = default_config().model_copy(update={"runtime_class_name": "nvidia"})
    assert _pod(_render(shape_of("tiny-llama"), H100, config))["runtimeClassName"] == "nvidia"
    assert "runtimeClassName" not in _pod(_render(shape_of("tiny-llama"), H100))
    cpu = _render(shape_of("tiny-llama"), CPU, config, accelerators=["cpu"])
    assert "runtimeClassName" not in _pod(cpu)


@pytest.mark.parametrize("port", [8000, 8123])
def test_workers_name_the_serve_port_kuberays_readiness_probe_asks(shape_of, port: int) -> None:
    config = default_config().model_copy(update={"serve_port": port})
    ports = _pod(_render(shape_of("tiny-llama"), H100, config))["containers"][0]["ports"]
    assert {"name": "serve", "containerPort": port} in ports
    assert {"name": "metrics", "containerPort": 8080} in ports


# ---- 7. cold start, and 9. the kubelet disk ----------------------------------------------------


def _decide(shape: ModelShape, pool: NodePool, config: PlatformConfig | None = None) -> Any:
    obs = Observed(
        model=_model(workload={"maxContextTokens": 1024}),
        generation=1,
        uid="u1",
        pools=[pool],
        shape=shape,
        shape_error=None,
        rayservice=None,
    )
    return decide(obs, config or default_config(), "t")


def test_the_predicted_cold_start_is_in_status_and_bounds_the_wait(shape_of) -> None:
    from ridgeline import cold_start

    shape = shape_of("llama-3.1-8b")
    decision = _decide(shape, H100)
    cold = decision.status.plan.cold_start
    assert cold is not None
    gb = shape.checkpoint_bytes / 1e9
    assert cold.download_seconds == pytest.approx(gb / 0.49, abs=0.1)
    assert cold.load_seconds == pytest.approx(gb / 1.0, abs=0.1)
    assert cold.image_pull_seconds == 70.0  # 7 GB at 100 MB/s
    assert cold.seconds == pytest.approx(
        cold.image_pull_seconds + cold.download_seconds + cold.load_seconds + 20, abs=0.2
    )
    assert "docs/benchmarks.md" in cold.basis
    app = yaml.safe_load(decision.apply["spec"]["serveConfigV2"])["applications"][0]
    args = ServingArgs.model_validate(app["args"])
    assert args.predicted_cold_start_s == cold.seconds
    assert args.cold_start_wait_s == cold_start.WAIT_CAP_S  # 50 s < 1.5 x the cold start
    status = decision.status.model_dump(by_alias=True, exclude_none=True)
    assert status["plan"]["coldStart"]["seconds"] == cold.seconds


def test_a_weight_cache_larger_than_the_pools_disk_is_refused(shape_of) -> None:
    shape = shape_of("llama-3.1-8b")  # 16 GB of bf16 weights
    small = H100.model_copy(update={"ephemeral_storage_gib": 10})
    decision = _decide(shape, small)
    assert decision.result == Result.INCOMPATIBLE
    assert decision.apply is None
    [cond] = [c for c in decision.status.conditions if c.type == "Compatible"]
    assert (cond.status, cond.reason) == ("False", "CacheDoesNotFit")
    assert "10 GiB allocatable" in cond.message
    assert "hostPath" in cond.message
    big = H100.model_copy(update={"ephemeral_storage_gib": 100})
    assert _decide(shape, big).apply is not None
    host = default_config().model_copy(update={"weights_cache_volume": "hostPath"})
    assert _decide(shape, small, host).apply is not None  # no emptyDir request to fit
