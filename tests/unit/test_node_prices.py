"""Prices of discovered and declared pools from the chart's serving.nodePrices: the instance
type wins over the GPU product, a pool costs its dearest node, and a change re-prices."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from ridgeline.node_prices import INSTANCE_TYPE, NodePrices
from ridgeline.planner import NodePool
from ridgeline.platform_config import PlatformConfig
from ridgeline_dev.fleet import node_manifests
from ridgeline_operator.node_pools import PoolCache, node_facts
from tests.conftest import REPO

H100 = NodePool(
    name="h100", gpu_product="NVIDIA-H100-80GB-HBM3", gpus_per_node=8, driver_version="550.54.15"
)


def _nodes(pool: NodePool, instance_types: list[str | None]) -> list[dict[str, Any]]:
    nodes = node_manifests([pool.model_copy(update={"nodes": len(instance_types)})])
    for node, kind in zip(nodes, instance_types, strict=True):
        node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
        if kind is not None:
            node["metadata"]["labels"][INSTANCE_TYPE] = kind
    return nodes


def _pools(
    nodes: list[dict[str, Any]], prices: NodePrices, declared: list[NodePool] | None = None
) -> dict[str, NodePool]:
    cache = PoolCache(declared)
    cache.set_prices(prices)
    for n in nodes:
        meta = n["metadata"]
        cache.node(meta["name"], node_facts(meta["labels"], n["spec"], n["status"]))
    cache.derive()
    return {p.name: p for p in cache.pools}


def _discovered(pools: dict[str, NodePool]) -> NodePool:
    (pool,) = [p for p in pools.values() if p.name.startswith("nvidia-h100")]
    return pool


def test_the_instance_type_wins_over_the_product() -> None:
    prices = NodePrices(
        by_instance_type={"p5.48xlarge": 55.04}, per_gpu_by_product={"NVIDIA-H100-80GB-HBM3": 10}
    )
    assert _discovered(_pools(_nodes(H100, ["p5.48xlarge"]), prices)).price_per_node_hour == 55.04
    # a node of an instance type the map does not name: its GPUs at the product's price
    assert _discovered(_pools(_nodes(H100, ["other"]), prices)).price_per_node_hour == 80
    # a pool of both costs what its dearest node costs
    both = _pools(_nodes(H100, ["p5.48xlarge", None]), prices)
    assert _discovered(both).price_per_node_hour == 80


def test_a_node_without_a_price_leaves_the_pool_its_declared_twins_or_none() -> None:
    prices = NodePrices(by_instance_type={"p5.48xlarge": 55.04})
    nodes = _nodes(H100, ["p5.48xlarge", "p5e.48xlarge"])
    assert _discovered(_pools(nodes, prices)).price_per_node_hour is None
    twin = H100.model_copy(update={"name": "h100-declared", "price_per_node_hour": 60.0})
    assert _discovered(_pools(nodes, prices, [twin])).price_per_node_hour == 60.0


def test_declared_pools_keep_their_price_or_take_their_products() -> None:
    prices = NodePrices(per_gpu_by_product={"nvidia-h100-80gb-hbm3": 6.88, "NVIDIA-L4": 0.8})
    own = H100.model_copy(update={"name": "own", "price_per_node_hour": 40.0})
    bare = H100.model_copy(update={"name": "bare", "driver_version": "570.124.06"})
    shared = NodePool(name="l4s", gpu_product="NVIDIA-L4-SHARED", gpus_per_node=2, shared_by=4)
    unknown = NodePool(name="a10", gpu_product="NVIDIA-A10G", gpus_per_node=1)
    pools = _pools([], prices, [own, bare, shared, unknown])
    assert pools["own"].price_per_node_hour == 40.0
    assert pools["bare"].price_per_node_hour == pytest.approx(55.04)
    assert pools["l4s"].price_per_node_hour == pytest.approx(1.6)  # a node of 2 L4s
    assert pools["a10"].price_per_node_hour is None


def test_a_new_price_map_prices_the_pools_again() -> None:
    cache = PoolCache()
    for n in _nodes(H100, ["p5.48xlarge"]):
        meta = n["metadata"]
        cache.node(meta["name"], node_facts(meta["labels"], n["spec"], n["status"]))
    cache.derive()
    (name,) = [p.name for p in cache.pools]
    cache.set_prices(NodePrices())
    assert not cache.stale  # the same map: nothing to do
    cache.set_prices(NodePrices(by_instance_type={"p5.48xlarge": 55.04}))
    assert cache.stale
    assert cache.derive() == {name}  # its models plan again
    assert cache.pools[0].price_per_node_hour == 55.04


def test_the_chart_values_and_the_config_take_the_price_map() -> None:
    values = yaml.safe_load((REPO / "charts" / "ridgeline" / "values.yaml").read_text())
    assert values["serving"]["nodePrices"] == {"byInstanceType": {}, "perGpuByProduct": {}}
    config = PlatformConfig.model_validate(
        {
            "images": [{"image": "x", "torch": "2.6.0"}],
            "nodePrices": {"byInstanceType": {"p5.48xlarge": 55.04}},
            "nodePools": [{**H100.model_dump(by_alias=True), "pricePerNodeHour": 55.04}],
        }
    )
    assert config.node_prices.by_instance_type == {"p5.48xlarge": 55.04}
    assert config.node_pools[0].price_per_node_hour == 55.04
    with pytest.raises(ValidationError):
        NodePrices.model_validate({"perGpuByProduct": {"NVIDIA-L4": -1}})
