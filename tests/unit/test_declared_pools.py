"""Declared pools with nodeLabels once their nodes exist: the nodes are the pool's (no second,
discovered pool; the plan stays put), and a node that reports less than the pool declares (an
older driver above all) is a condition on the models planned there."""

from __future__ import annotations

from typing import Any

from ridgeline.api import InferenceModel
from ridgeline.controller import Observed, decide
from ridgeline.discovery import pools_from_nodes
from ridgeline.planner import NodePool
from ridgeline.platform_config import default_config
from ridgeline_dev.fleet import gfd_labels
from ridgeline_operator.node_pools import PoolCache, node_facts

LABELS = {"karpenter.k8s.aws/instance-gpu-name": "l4", "team.example/pool": "l4"}
DECLARED = NodePool(
    name="l4-from-zero",
    gpu_product="NVIDIA-L4",
    gpus_per_node=1,
    driver_version="550.54.15",
    node_labels=LABELS,
    cpus=4,
    memory_gib=14,
)
ALLOC = {"cpu": "4", "memory": "15Gi", "nvidia.com/gpu": "1", "ephemeral-storage": "90Gi"}


def _facts(
    labels: dict[str, str], alloc: dict[str, str] | None = None
) -> tuple[dict[str, str], dict[str, str], bool]:
    return labels, dict(alloc or ALLOC), True


def _gfd(driver: str) -> dict[str, str]:
    return gfd_labels(DECLARED.model_copy(update={"driver_version": driver}))


def test_nodes_with_the_labels_stay_the_declared_pools() -> None:
    nodes = {
        # booted, not labelled by GFD yet; then one GFD has labelled, as declared
        "new": _facts(dict(LABELS)),
        "labelled": _facts({**LABELS, **_gfd("550.54.15")}),
        # the same GPU and driver without the pool's labels: a discovered pool of its own
        "other": _facts(_gfd("550.54.15")),
    }
    pools = pools_from_nodes(nodes, [DECLARED])
    names = [p.name for p in pools]
    assert names.count("l4-from-zero") == 1
    assert len(pools) == 2  # the declared twin of "other" is kept: it selects on its labels
    declared = next(p for p in pools if p.name == "l4-from-zero")
    assert declared.mismatches == ()
    assert declared == DECLARED  # its size stays the declared one: no re-render


def test_an_older_driver_or_a_smaller_node_than_declared_is_named() -> None:
    nodes = {
        "old": _facts({**LABELS, **_gfd("535.104.05")}),
        "small": _facts({**LABELS, **_gfd("550.54.15")}, {**ALLOC, "memory": "12Gi"}),
    }
    [declared] = [p for p in pools_from_nodes(nodes, [DECLARED]) if p.name == "l4-from-zero"]
    assert declared.mismatches == (
        "node old (with pool l4-from-zero's nodeLabels) reports driver 535.104.05, older than "
        "the declared 550.54.15",
        "node small (with pool l4-from-zero's nodeLabels) has 12.0 GiB allocatable memory, the "
        "pool declares 14",
    )


def _model(**spec: Any) -> InferenceModel:
    return InferenceModel.model_validate(
        {
            "metadata": {"name": "m", "namespace": "ns"},
            "spec": {
                "model": {"uri": "s3://models/m"},
                "workload": {"maxContextTokens": 512},
                **spec,
            },
        }
    )


def _decide(shape_of, pool: NodePool, model: InferenceModel | None = None) -> Any:  # type: ignore[no-untyped-def]
    obs = Observed(
        model=model or _model(),
        generation=1,
        uid="u1",
        pools=[pool],
        shape=shape_of("tiny-llama"),
        shape_error=None,
        rayservice=None,
    )
    return decide(obs, default_config(), "t")


def _condition(decision: Any) -> Any:
    return next((c for c in decision.status.conditions if c.type == "NodesMatchPool"), None)


def test_an_older_driver_than_declared_is_a_condition_on_the_model(shape_of) -> None:  # type: ignore[no-untyped-def]
    nodes = {"old": _facts({**LABELS, **_gfd("535.104.05")})}
    [pool] = pools_from_nodes(nodes, [DECLARED])
    decision = _decide(shape_of, pool)
    cond = _condition(decision)
    assert (cond.status, cond.reason) == ("False", "DriverOlderThanDeclared")
    assert "node old" in cond.message
    assert "535.104.05" in cond.message
    assert "driverVersion" in cond.message
    assert decision.apply is not None  # the declaration stands; the condition says it is wrong
    assert [e.new.reason for e in decision.events if e.type == "NodesMatchPool"] == [
        "DriverOlderThanDeclared"
    ]

    agreed = _decide(shape_of, DECLARED)
    assert (_condition(agreed).status, _condition(agreed).reason) == ("True", "NodesMatch")
    # a model planned on a pool without nodeLabels carries no such condition, even if it did
    moved = _model().model_copy(update={"status": decision.status})
    discovered = DECLARED.model_copy(update={"node_labels": {}})
    assert _condition(_decide(shape_of, discovered, moved)) is None


def test_a_node_that_disagrees_wakes_the_models_on_the_pool() -> None:
    cache = PoolCache([DECLARED])
    cache.derive()
    ready = {"conditions": [{"type": "Ready", "status": "True"}], "allocatable": ALLOC}
    cache.node("good", node_facts({**LABELS, **_gfd("550.54.15")}, {}, ready))
    assert cache.derive() == set()  # a node that agrees changes nothing
    cache.node("old", node_facts({**LABELS, **_gfd("535.104.05")}, {}, ready))
    assert cache.derive() == {"l4-from-zero"}
