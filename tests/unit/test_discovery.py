"""Pools from GFD labels as real nodes carry them: node sizes from allocatable, time-sliced GPUs
only with their share, and an affinity that matches the driver labels that were discovered."""

from __future__ import annotations

from typing import Any

import pytest

from ridgeline.discovery import discover_pools
from ridgeline.planner import NodePool
from ridgeline.quantity import parse_quantity
from ridgeline.render.affinity import gpu_node_affinity
from ridgeline_dev.fleet import node_manifests

L4 = NodePool(name="l4", gpu_product="NVIDIA-L4", gpus_per_node=1, driver_version="550.54.15")


def _node(pool: NodePool, **allocatable: str) -> tuple[dict[str, str], dict[str, str], bool]:
    manifest = node_manifests([pool])[0]
    return (
        dict(manifest["metadata"]["labels"]),
        {**manifest["status"]["allocatable"], **allocatable},
        True,
    )


def _matches(affinity: dict[str, Any], labels: dict[str, str]) -> bool:
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]

    def ok(e: dict[str, Any]) -> bool:
        value = labels.get(e["key"])
        if value is None:
            return False
        if e["operator"] == "In":
            return value in e["values"]
        return int(value) > int(e["values"][0])

    return any(all(ok(e) for e in t["matchExpressions"]) for t in terms)


@pytest.mark.parametrize(
    ("text", "value"),
    [("7910m", "7.91"), ("16Gi", str(16 * 2**30)), ("1e3", "1000"), ("123456Ki", "126418944")],
)
def test_quantities(text: str, value: str) -> None:
    assert parse_quantity(text) == parse_quantity(value)


def test_pool_size_is_its_smallest_nodes_allocatable() -> None:
    pools = discover_pools(
        [
            _node(L4, cpu="7910m", memory="31Gi"),
            _node(L4, cpu="3920m", memory="15573304Ki"),
        ]
    )
    [pool] = pools
    assert (pool.nodes, pool.cpus, pool.memory_gib) == (2, 3, 14)


def test_time_sliced_gpus_need_their_share() -> None:
    shared = L4.model_copy(update={"gpu_product": "NVIDIA-L4-SHARED", "shared_by": 4})
    labels, alloc, ready = _node(shared, **{"nvidia.com/gpu": "4"})
    assert discover_pools([({**labels, "nvidia.com/gpu.replicas": "1"}, alloc, ready)]) == []
    without = {k: v for k, v in labels.items() if k != "nvidia.com/gpu.replicas"}
    assert discover_pools([(without, alloc, ready)]) == []
    [pool] = discover_pools([(labels, alloc, ready)])
    assert (pool.shared_by, pool.gpus_per_node) == (4, 4)
    assert pool.accelerator().memory_bytes == L4.accelerator().memory_bytes // 4


def test_whole_gpu_plans_never_land_on_shared_nodes() -> None:
    whole, _, _ = _node(L4)
    shared, _, _ = _node(L4.model_copy(update={"gpu_product": "NVIDIA-L4-SHARED", "shared_by": 4}))
    plain = gpu_node_affinity("NVIDIA-L4", "550.54.14")
    assert _matches(plain, whole)
    assert not _matches(plain, shared)
    share = gpu_node_affinity("NVIDIA-L4-SHARED", "550.54.14", shared_by=4)
    assert _matches(share, shared)
    assert not _matches(share, {**shared, "nvidia.com/gpu.replicas": "8"})
    assert not _matches(share, whole)


def test_affinity_matches_nodes_with_only_the_deprecated_driver_labels() -> None:
    labels, alloc, ready = _node(L4)
    old = {k: v for k, v in labels.items() if "cuda.driver-version" not in k}
    [pool] = discover_pools([(old, alloc, ready)])
    assert pool.driver_version == "550.54.15"
    affinity = gpu_node_affinity("NVIDIA-L4", "550.54.14")
    assert _matches(affinity, old)
    assert _matches(affinity, {k: v for k, v in labels.items() if ".driver." not in k})
    too_old = {**old, "nvidia.com/cuda.driver.rev": "13"}
    assert not _matches(affinity, too_old)
