"""Prices for pools the operator finds or is told of: the chart's ``serving.nodePrices``.

A node's price comes from its ``node.kubernetes.io/instance-type`` label where the map has one
(a cloud price list prices instances), else from its GPU product's price per GPU-hour times its
GPUs. A discovered pool costs what its dearest node costs: a replica may land on any of them.
A pool with a node the map cannot price keeps its declared twin's price, or has none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from ridgeline.planner.pools import NodePool

INSTANCE_TYPE = "node.kubernetes.io/instance-type"
SHARED_SUFFIX = "-shared"  # GFD's time-sliced product names (discovery.SHARED_SUFFIX)

Price = Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)]
# (labels, allocatable, schedulable) per Node, as discover_pools takes them.
Node = tuple[Mapping[str, str], Mapping[str, str], bool]


class NodePrices(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    by_instance_type: dict[str, Price] = Field(
        default_factory=dict,
        description="A node-hour's price by node.kubernetes.io/instance-type (wins over the "
        "product).",
    )
    per_gpu_by_product: dict[str, Price] = Field(
        default_factory=dict,
        description="A GPU-hour's price by nvidia.com/gpu.product (a -SHARED product is priced "
        "as its GPU); a node costs it times its GPUs.",
    )

    def product_price(self, product: str, gpus: int) -> float | None:
        """A node of ``gpus`` GPUs of ``product``, from the per-GPU map."""
        wanted = _product_key(product)
        for name, price in self.per_gpu_by_product.items():
            if _product_key(name) == wanted:
                return price * gpus
        return None

    def node_price(self, labels: Mapping[str, str], pool: NodePool) -> float | None:
        instance_type = labels.get(INSTANCE_TYPE)
        if instance_type is not None and instance_type in self.by_instance_type:
            return self.by_instance_type[instance_type]
        return self.product_price(pool.gpu_product, pool.gpus_per_node)


def _product_key(product: str) -> str:
    key = product.strip().lower()
    return key.removesuffix(SHARED_SUFFIX)


def price_pools(
    pools: list[NodePool], nodes: Iterable[Node], prices: NodePrices, declared: list[NodePool]
) -> list[NodePool]:
    """``pools`` (discovered from ``nodes`` and merged with ``declared``) with their prices.

    A declared pool keeps its own pricePerNodeHour, or takes its product's. A discovered pool
    costs what its dearest node costs; where a node has no price, its declared twin's (the
    declared pool it replaces), or none."""
    # Here, not at the top: discovery imports the image catalog, which imports the platform
    # config, which imports this module for NodePrices.
    from ridgeline.discovery import discover_pools

    names = {d.name for d in declared}
    by_pool: dict[str, list[float | None]] = {}
    for node in nodes:
        # The node's own pool, as discover_pools groups it (none: not a discovered pool's node,
        # e.g. one a declared pool's nodeLabels claim).
        for mine in discover_pools([node], declared):
            by_pool.setdefault(mine.name, []).append(prices.node_price(node[0], mine))
    out = []
    for pool in pools:
        if pool.name in names:
            price = _declared_price(pool, prices)
        else:
            found = by_pool.get(pool.name, [])
            known = [p for p in found if p is not None]
            if found and len(known) == len(found):
                price = max(known)
            else:
                price = _twin_price(pool, declared, prices)
        out.append(
            pool if price is None else pool.model_copy(update={"price_per_node_hour": price})
        )
    return out


def _declared_price(pool: NodePool, prices: NodePrices) -> float | None:
    if pool.price_per_node_hour is not None:
        return pool.price_per_node_hour
    return prices.product_price(pool.gpu_product, pool.gpus_per_node)


def _twin_price(pool: NodePool, declared: list[NodePool], prices: NodePrices) -> float | None:
    """The price of the declared pool this discovered one replaces (merge_pools' key)."""
    key = (pool.gpu_product.lower(), pool.gpus_per_node, pool.driver_version)
    for d in declared:
        if (d.gpu_product.lower(), d.gpus_per_node, d.driver_version) == key:
            return _declared_price(d, prices)
    return None
