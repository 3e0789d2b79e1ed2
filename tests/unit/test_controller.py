"""The operator's pure core: discovery, compatibility, affinity, rendering, conditions and the
reconcile decision."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from ridgeline.api import InferenceModel
from ridgeline.api.inference_model import Condition
from ridgeline.api.serving_args import ServingArgs
from ridgeline.compat import IncompatibleError, choose_image
from ridgeline.conditions import set_condition, transitions
from ridgeline.controller import Observed, decide
from ridgeline.discovery import discover_pools, merge_pools
from ridgeline.planner import NodePool
from ridgeline.platform_config import PlatformConfig, ServingImage, default_config
from ridgeline.rayservice_view import RayServiceView
from ridgeline.render import build_rayservice
from ridgeline.render.affinity import gpu_node_affinity
from ridgeline_dev.fleet import node_manifests

H100 = NodePool(
    name="h100", gpu_product="NVIDIA-H100-80GB-HBM3", gpus_per_node=8, driver_version="550.54.15"
)
OLD = NodePool(name="old", gpu_product="NVIDIA-L4", gpus_per_node=1, driver_version="470.82.01")


def _nodes(*pools: NodePool) -> list[tuple[dict[str, str], dict[str, str], bool]]:
    return [
        (n["metadata"]["labels"], n["status"]["allocatable"], True)
        for n in node_manifests(list(pools))
    ]


def test_discovery_groups_nodes_by_product_count_and_driver() -> None:
    two = H100.model_copy(update={"nodes": 2})
    pools = discover_pools(_nodes(two, OLD))
    assert [(p.gpu_product, p.gpus_per_node, p.driver_version, p.nodes) for p in pools] == [
        ("NVIDIA-H100-80GB-HBM3", 8, "550.54.15", 2),
        ("NVIDIA-L4", 1, "470.82.01", 1),
    ]
    assert pools[0].gpu_memory_mib == 81559


def test_discovery_falls_back_to_deprecated_driver_labels_and_skips_unschedulable() -> None:
    labels, alloc, _ = _nodes(H100)[0]
    old_style = {k: v for k, v in labels.items() if "driver-version" not in k}
    pools = discover_pools([(old_style, alloc, True), (labels, alloc, False)])
    assert [p.driver_version for p in pools] == ["550.54.15"]
    assert pools[0].nodes == 1


def test_declared_pools_fill_in_for_scale_from_zero() -> None:
    declared = [
        H100.model_copy(update={"name": "declared-h100"}),
        NodePool(
            name="h200", gpu_product="NVIDIA-H200", gpus_per_node=8, driver_version="570.124.06"
        ),
    ]
    merged = merge_pools(discover_pools(_nodes(H100)), declared)
    assert [p.name for p in merged][1:] == ["h200"]


def test_newest_image_the_driver_runs() -> None:
    config = default_config()
    assert choose_image(config, H100, _q("none")).cuda_version == "12.4"
    a100 = NodePool(
        name="a", gpu_product="NVIDIA-A100-SXM4-40GB", gpus_per_node=8, driver_version="535.104.05"
    )
    # No CUDA 12.1 image (transformers needs torch >= 2.6): a 535 driver runs an image only
    # with CUDA minor-version compatibility.
    with pytest.raises(IncompatibleError, match=r"driver 535\.104\.05 on pool a runs none"):
        choose_image(config, a100, _q("none"))
    relaxed = config.model_copy(update={"minor_version_compatibility": True})
    assert choose_image(relaxed, a100, _q("none")).cuda_version == "12.8"
    with pytest.raises(IncompatibleError, match=r"driver 470\.82\.01 on pool old runs none"):
        choose_image(config, OLD, _q("none"))


def test_bitsandbytes_int8_needs_turing_or_newer() -> None:
    v100 = NodePool(name="t4", gpu_product="Tesla-T4", gpus_per_node=1, driver_version="550.54.15")
    assert choose_image(default_config(), v100, _q("int8")).cuda_version == "12.4"  # 7.5 is enough


def _q(value: str) -> Any:
    from ridgeline.api import Quantization

    return Quantization(value)


def test_driver_affinity_excludes_older_drivers() -> None:
    terms = gpu_node_affinity("NVIDIA-H100-80GB-HBM3", "550.54.14")["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]

    def matches(driver: str) -> bool:
        major, minor, rev = driver.split(".")
        labels = {
            "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
            "nvidia.com/cuda.driver-version.major": major,
            "nvidia.com/cuda.driver-version.minor": minor,
            "nvidia.com/cuda.driver-version.revision": rev,
        }

        def ok(e: dict[str, Any]) -> bool:
            value = labels.get(e["key"])
            if value is None:
                return False
            return (
                value in e["values"] if e["operator"] == "In" else int(value) > int(e["values"][0])
            )

        return any(all(ok(e) for e in t["matchExpressions"]) for t in terms)

    assert matches("550.54.14")
    assert matches("550.54.15")
    assert matches("550.90.07")
    assert matches("570.26.0")
    assert not matches("550.54.13")
    assert not matches("535.104.05")


def _model(**spec: Any) -> InferenceModel:
    return InferenceModel.model_validate(
        {
            "metadata": {"name": "m", "namespace": "ns"},
            "spec": {"model": {"uri": "s3://models/m"}, **spec},
        }
    )


def test_rendered_serve_config_carries_valid_serving_args(shape_of) -> None:
    from ridgeline.planner import plan_model

    model = _model(workload={"maxContextTokens": 2048}, replicas={"min": 0, "max": 3})
    plan = plan_model(shape_of("llama-3.1-8b"), model.spec, [H100])
    placement = choose_image(default_config(), H100, model.spec.quantization)
    rs = build_rayservice(model, plan, placement, default_config(), uid="u-1")
    app = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]
    args = ServingArgs.model_validate(app["args"])
    assert args.max_batch_size == plan.batch_target
    assert app["deployments"][0]["autoscaling_config"]["min_replicas"] == 0  # scale to zero
    assert (
        app["deployments"][0]["autoscaling_config"]["target_ongoing_requests"] == plan.batch_target
    )
    assert rs["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    worker = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    # fixed bounds: Serve's autoscaling decides within them (KubeRay never updates them)
    assert (worker["replicas"], worker["minReplicas"], worker["maxReplicas"]) == (1, 0, 1000)
    assert rs["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is True


def test_conditions_keep_their_transition_time_until_they_flip() -> None:
    conds = set_condition([], "Ready", "False", "Starting", "", 1, "t1")
    again = set_condition(conds, "Ready", "False", "Starting", "still", 2, "t2")
    assert again[0].last_transition_time == "t1"
    flipped = set_condition(again, "Ready", "True", "Ready", "", 2, "t3")
    assert flipped[0].last_transition_time == "t3"
    assert [t.new.status for t in transitions(again, flipped)] == ["True"]
    assert transitions(conds, again) == []


def _observed(
    model: InferenceModel,
    shape: Any,
    pools: list[NodePool],
    rs: dict[str, Any] | None = None,
    gen: int = 1,
) -> Observed:
    return Observed(
        model=model,
        generation=gen,
        uid="u",
        pools=pools,
        shape=shape,
        shape_error=None,
        rayservice=None if rs is None else RayServiceView.from_object(rs),
    )


def test_decide_applies_then_is_quiet_once_up_to_date(shape_of) -> None:
    model = _model(workload={"maxContextTokens": 1024})
    first = decide(_observed(model, shape_of("tiny-llama"), [H100]), default_config(), "t0")
    assert first.apply is not None
    assert {c.type: c.status for c in first.status.conditions} == {
        "Planned": "True",
        "Compatible": "True",
        "Applied": "True",
        "Ready": "False",
    }
    running = first.apply
    model2 = model.model_copy(update={"status": first.status})
    second = decide(
        _observed(model2, shape_of("tiny-llama"), [H100], running), default_config(), "t1"
    )
    assert second.apply is None
    # the RayService now exists: Ready stays False with a new reason (one Event), nothing else
    assert [(t.type, t.new.reason) for t in second.events] == [("Ready", "RayServiceStarting")]
    assert [c.last_transition_time for c in second.status.conditions] == ["t0"] * 4
    model3 = model.model_copy(update={"status": second.status})
    third = decide(
        _observed(model3, shape_of("tiny-llama"), [H100], running), default_config(), "t2"
    )
    assert third.apply is None
    assert third.events == []
    assert third.status == second.status


def test_decide_infeasible_keeps_the_running_plan_and_applies_nothing(shape_of) -> None:
    model = _model(workload={"maxContextTokens": 1024})
    first = decide(_observed(model, shape_of("tiny-llama"), [H100]), default_config(), "t0")
    changed = _model(accelerators=["NVIDIA-L4"], workload={"maxContextTokens": 1024})
    changed = changed.model_copy(update={"status": first.status})
    second = decide(
        _observed(changed, shape_of("llama-3.1-70b"), [H100, OLD], first.apply, gen=2),
        default_config(),
        "t1",
    )
    assert second.apply is None
    planned = next(c for c in second.status.conditions if c.type == "Planned")
    assert (planned.status, planned.reason) == ("False", "Infeasible")
    assert "left as it was" in planned.message
    assert second.status.plan == first.status.plan
    assert [t.new.reason for t in second.events if t.type == "Planned"] == ["Infeasible"]


def test_decide_keeps_a_running_plan_when_a_better_pool_appears(shape_of) -> None:
    model = _model(workload={"maxContextTokens": 1024})
    first = decide(
        _observed(
            model, shape_of("tiny-llama"), [OLD.model_copy(update={"driver_version": "550.54.15"})]
        ),
        default_config(),
        "t0",
    )
    assert first.status.plan is not None
    model2 = model.model_copy(update={"status": first.status})
    better = NodePool(
        name="h200", gpu_product="NVIDIA-H200", gpus_per_node=8, driver_version="570.124.06"
    )
    second = decide(
        _observed(
            model2,
            shape_of("tiny-llama"),
            [OLD.model_copy(update={"driver_version": "550.54.15"}), better],
            first.apply,
        ),
        default_config(),
        "t1",
    )
    assert second.status.plan == first.status.plan
    assert [t for t in second.events if t.type == "Planned"] == []
    assert second.apply is None


def test_decide_unreadable_model() -> None:
    obs = Observed(
        model=_model(),
        generation=1,
        uid="u",
        pools=[H100],
        shape=None,
        shape_error="cannot read config.json: s3://models/m/config.json: no such object",
        rayservice=None,
    )
    planned = next(
        c for c in decide(obs, default_config(), "t").status.conditions if c.type == "Planned"
    )
    assert planned.reason == "ModelUnreadable"
    assert "config.json" in planned.message


def test_cpu_image_required_for_cpu_pools() -> None:
    gpu_only = PlatformConfig(images=[ServingImage(image="x", cuda="12.4", torch="2.6")])
    with pytest.raises(IncompatibleError, match="no CPU image"):
        choose_image(gpu_only, NodePool(name="c", gpu_product="cpu", gpus_per_node=0), _q("none"))


def test_condition_model_roundtrip() -> None:
    cond = Condition(type="Ready", status="True", reason="Ready")
    assert cond.to_api() == {"type": "Ready", "status": "True", "reason": "Ready", "message": ""}


@pytest.mark.parametrize(
    ("status", "temporary", "delay"),
    [
        (409, True, 1),
        (404, True, 10),
        (429, True, 5),
        (500, True, 10),
        (503, True, 10),
        (0, True, 10),
        (400, False, None),
        (403, False, None),
        (422, False, None),
    ],
)
def test_api_errors_retry_with_backoff_or_stop(
    status: int, temporary: bool, delay: int | None
) -> None:
    import kopf
    from kubernetes.client.exceptions import ApiException

    from ridgeline_operator.kube import as_kopf_error

    err = as_kopf_error(ApiException(status=status, reason="x"), "apply RayService ns/m")
    assert isinstance(err, kopf.TemporaryError if temporary else kopf.PermanentError)
    if temporary:
        assert err.delay == delay
    assert "apply RayService ns/m" in str(err)


def test_decide_says_what_a_refused_apply_becomes(shape_of) -> None:
    from ridgeline.conditions import ConditionType, Reason
    from ridgeline.controller import Result

    model = _model(workload={"maxContextTokens": 1024})
    decision = decide(_observed(model, shape_of("tiny-llama"), [H100]), default_config(), "t0")
    assert (decision.result, decision.apply is not None) == (Result.APPLIED, True)
    assert decision.status.endpoint is not None
    refused = decision.refused("apply RayService ns/m: HTTP 403 Forbidden: " + "x" * 2000)
    assert (refused.result, refused.apply) == (Result.REFUSED, None)
    applied = next(c for c in refused.status.conditions if c.type == ConditionType.APPLIED)
    assert (applied.status, applied.reason) == ("False", Reason.APPLY_REFUSED)
    assert applied.message.startswith("apply RayService ns/m: HTTP 403")
    assert len(applied.message) == 1000
    assert refused.status.observed_generation == 1  # the resync tries again
    assert refused.status.endpoint is None  # nothing serves there yet
    # the Events are the transitions from before this pass, not from the optimistic outcome
    assert [(e.type, e.new.reason) for e in refused.events] == [
        ("Planned", Reason.batch_target(decision.status.plan.bound)),  # type: ignore[union-attr]
        ("Compatible", "ImageSelected"),
        ("Applied", "ApplyRefused"),
        ("Ready", "RayServiceMissing"),
    ]
    # the decision itself is untouched: a caller that got through keeps the applied outcome
    assert decision.result == Result.APPLIED


def test_every_condition_type_and_reason_written_is_an_enum_member(shape_of) -> None:
    from ridgeline.conditions import ConditionType, Reason

    model = _model(workload={"maxContextTokens": 1024})
    first = decide(_observed(model, shape_of("tiny-llama"), [H100]), default_config(), "t0")
    kuberay = {
        "metadata": first.apply["metadata"] if first.apply else {},
        "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Pending"}]},
    }
    seen = list(first.status.conditions)
    for rs in (None, kuberay):
        obs = _observed(model.model_copy(update={"status": first.status}), None, [OLD], rs)
        seen += decide(obs, default_config(), "t1").status.conditions
    seen += decide(
        _observed(_model(accelerators=["NVIDIA-L4"]), shape_of("tiny-llama"), [OLD]),
        default_config(),
        "t2",
    ).status.conditions
    assert {c.type for c in seen} <= set(ConditionType)
    assert {c.reason for c in seen} <= set(Reason)
    ready = [c for c in seen if c.type == "Ready" and c.reason == Reason.NOT_READY]
    assert ready
    assert ready[0].message == "KubeRay: Pending"  # KubeRay's reason, in the message
