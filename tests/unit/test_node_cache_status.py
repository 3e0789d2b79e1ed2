"""status.weights and the Cached condition from the agents' reports (issue 24): each reason,
the sums, and the reconcile decision with the node cache enabled and disabled."""

from __future__ import annotations

from typing import Any

from ridgeline.api import InferenceModel
from ridgeline.api.node_cache import CheckpointReport, NodeCacheReport, WeightsStatus
from ridgeline.controller import Observed, decide
from ridgeline.node_cache_status import cached_condition, weights_status
from ridgeline.planner import NodePool
from ridgeline.platform_config import NodeCacheConfig, PlatformConfig, default_config
from ridgeline.render.node_cache import checkpoint_directory

URI = "s3://models/m"
DIR = checkpoint_directory(URI)
GB = 10**9
H100 = NodePool(
    name="h100", gpu_product="NVIDIA-H100-80GB-HBM3", gpus_per_node=8, driver_version="550.54.15"
)
LABELS = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


def _entry(state: str, present: int = 0, total: int = 10 * GB, **extra: Any) -> CheckpointReport:
    complete = state == "Complete"
    return CheckpointReport(
        uri=URI,
        digest="d2",
        current_digest="d2" if complete else extra.pop("current_digest", None),
        state=state,
        bytes=total if complete else present,
        total_bytes=total,
        models=["ns/m"],
        **extra,
    )


def _report(node: str, entry: CheckpointReport | None, directory: str = DIR) -> NodeCacheReport:
    return NodeCacheReport(
        node=node,
        updated="2026-12-06T08:00:00Z",
        budget_bytes=100 * GB,
        used_bytes=10 * GB,
        checkpoints={} if entry is None else {directory: entry},
    )


def _weights(*reports: NodeCacheReport) -> tuple[WeightsStatus, tuple[str, str, str]]:
    weights = weights_status(URI, DIR, 10 * GB, LABELS, reports)
    return weights, cached_condition(weights, reports)


def test_no_agent_reports_the_directory() -> None:
    other = _report("n1", _entry("Complete"), directory="someone-else")
    weights, (status, reason, message) = _weights(other, _report("n2", None))
    assert (weights.nodes, weights.nodes_complete, weights.bytes_cached) == (0, 0, 0)
    assert weights.seconds_left is None
    assert (status, reason) == ("False", "NoAgent")
    assert "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3" in message
    assert DIR in message


def test_complete_on_every_reporting_node() -> None:
    weights, (status, reason, message) = _weights(
        _report("n1", _entry("Complete")), _report("n2", _entry("Complete"))
    )
    assert (weights.nodes, weights.nodes_complete, weights.nodes_filling) == (2, 2, 0)
    assert weights.bytes_cached == 10 * GB
    assert (status, reason) == ("True", "Complete")
    assert message == "complete on 2 of 2 nodes (10.0 GB each)"


def test_filling_sums_rates_and_says_the_time_left() -> None:
    weights, (status, reason, message) = _weights(
        _report("n1", _entry("Complete")),
        _report("n2", _entry("Filling", present=4 * GB, bytes_per_second=250e6)),
        _report("n3", _entry("Filling", present=2 * GB, bytes_per_second=250e6)),
    )
    assert (weights.nodes, weights.nodes_complete, weights.nodes_filling) == (3, 1, 2)
    assert weights.bytes_cached == (10 + 4 + 2) * GB // 3  # the mean over reporting nodes
    assert weights.bytes_per_second == 500e6
    assert weights.seconds_left == (6 + 8) * GB / 500e6
    assert (status, reason) == ("False", "Filling")
    assert message == "1 of 3 nodes complete, 16.0 of 30.0 GB, 500 MB/s, about 28 s left"


def test_filling_without_a_rate_yet_gives_no_time() -> None:
    weights, (_, reason, message) = _weights(_report("n1", _entry("Filling", present=0)))
    assert weights.seconds_left is None
    assert reason == "Filling"
    assert message == "0 of 1 nodes complete, 0.0 of 10.0 GB"


def test_a_new_version_in_the_store_is_not_complete_until_current_names_it() -> None:
    stale = _entry("Complete").model_copy(update={"current_digest": "d1"})
    weights, (status, reason, _) = _weights(_report("n1", stale))
    assert weights.nodes_complete == 0
    assert (status, reason) == ("False", "Filling")


def test_a_failed_node_says_why_before_the_others_fill() -> None:
    _, (status, reason, message) = _weights(
        _report("n1", _entry("Filling", present=GB, bytes_per_second=1e8)),
        _report("n2", _entry("Failed", message="s3://models/m: AccessDenied")),
        _report("n3", _entry("Failed", message="disk full")),
        _report("n4", _entry("Failed", message="disk full")),
    )
    assert (status, reason) == ("False", "Failed")
    assert message == ("node n2: s3://models/m: AccessDenied; node n3: disk full; and 1 more node")


def test_a_budget_without_room_is_waiting() -> None:
    message = "size budget 20.0 GB: 15.0 GB used, 10.0 GB needed"
    _, (status, reason, said) = _weights(
        _report("n1", _entry("Complete")), _report("n2", _entry("Waiting", message=message))
    )
    assert (status, reason) == ("False", "Waiting")
    assert said == f"node n2: {message}"


# ---- the decision ------------------------------------------------------------------------------


def _model(status: Any = None) -> InferenceModel:
    return InferenceModel.model_validate(
        {
            "metadata": {"name": "m", "namespace": "ns"},
            "spec": {"model": {"uri": URI}, "workload": {"maxContextTokens": 1024}},
            "status": status,
        }
    )


def _config() -> PlatformConfig:
    cache = NodeCacheConfig(enabled=True, namespace="ridgeline-system")
    return default_config().model_copy(update={"node_cache": cache})


def _obs(model: InferenceModel, shape: Any, *reports: NodeCacheReport) -> Observed:
    return Observed(
        model=model,
        generation=1,
        uid="u",
        pools=[H100],
        shape=shape,
        shape_error=None if shape is not None else "unreachable",
        rayservice=None,
        node_reports=reports,
    )


def test_decide_writes_weights_and_cached_then_follows_the_reports(shape_of) -> None:
    shape = shape_of("tiny-llama")
    first = decide(_obs(_model(), shape), _config(), "t0")
    weights = first.status.weights
    assert weights is not None
    assert (weights.uri, weights.directory, weights.bytes) == (URI, DIR, shape.checkpoint_bytes)
    assert weights.node_labels == LABELS
    cached = {c.type: c for c in first.status.conditions}["Cached"]
    assert (cached.status, cached.reason) == ("False", "NoAgent")
    assert [c.type for c in first.status.conditions] == [
        "Planned",
        "Compatible",
        "Applied",
        "Ready",
        "Cached",
    ]
    # the PersistentVolume and its claim go with the apply
    assert [v["kind"] for v in first.node_volumes] == ["PersistentVolume", "PersistentVolumeClaim"]
    assert first.status.plan is not None
    assert first.status.plan.cold_start is not None
    assert first.status.plan.cold_start.node_cache_seconds is not None
    assert first.refused("no").node_volumes == []

    done = _entry("Complete", total=shape.checkpoint_bytes)
    second = decide(_obs(_model(first.status), shape, _report("n1", done)), _config(), "t1")
    cached = {c.type: c for c in second.status.conditions}["Cached"]
    assert (cached.status, cached.reason) == ("True", "Complete")
    assert [(t.type, t.new.reason) for t in second.events] == [("Cached", "Complete")]
    # storage unreachable on a later pass: the kept plan keeps the size last known
    third = decide(_obs(_model(second.status), None, _report("n1", done)), _config(), "t2")
    assert third.status.weights == second.status.weights


def test_decide_without_the_node_cache_writes_neither(shape_of) -> None:
    shape = shape_of("tiny-llama")
    enabled = decide(_obs(_model(), shape), _config(), "t0")
    disabled = decide(_obs(_model(enabled.status), shape), default_config(), "t1")
    assert disabled.status.weights is None
    assert "Cached" not in {c.type for c in disabled.status.conditions}
    assert disabled.node_volumes == []
    assert disabled.status.plan is not None
    assert disabled.status.plan.cold_start is not None
    assert disabled.status.plan.cold_start.node_cache_seconds is None
    assert "weights" not in disabled.status.to_api()


def test_an_unplanned_model_has_no_weights() -> None:
    decision = decide(_obs(_model(), None), _config(), "t0")
    assert decision.status.weights is None
    assert "Cached" not in {c.type for c in decision.status.conditions}


def test_a_model_read_from_a_path_has_no_weights(shape_of) -> None:
    # The node cache covers object stores only: a file:// model is read where it is.
    model = InferenceModel.model_validate(
        {
            "metadata": {"name": "m", "namespace": "ns"},
            "spec": {
                "model": {"uri": "file:///models/tiny"},
                "workload": {"maxContextTokens": 1024},
            },
        }
    )
    decision = decide(_obs(model, shape_of("tiny-llama")), _config(), "t0")
    assert decision.status.weights is None
    assert "Cached" not in {c.type for c in decision.status.conditions}
