"""What a replica costs: its share of a node's price, and what a million tokens cost at its
predicted throughput. Prices are in the platform's currency, whatever the pools give."""

from __future__ import annotations

from ridgeline.planner.pools import NodePool

SECONDS_PER_HOUR = 3600
TOKENS = 1_000_000


def replica_share(pool: NodePool, gpus: int) -> float:
    """The share of one node a replica holds.

    A GPU replica holds its GPUs of the node's (on time-sliced GPUs, each of a GPU's
    ``sharedBy`` replicas a share of it). A CPU replica holds its cores of the node's: the
    planner sizes it on all of the node's cores (``NodePool.accelerator``) and the render puts
    one replica on a node, so the share is the whole node."""
    if pool.is_cpu or pool.gpus_per_node <= 0:
        return 1.0
    return gpus / (pool.gpus_per_node * (pool.shared_by or 1))


def replica_hour_price(pool: NodePool, gpus: int) -> float | None:
    """A replica-hour's price; None where the pool has no price."""
    if pool.price_per_node_hour is None:
        return None
    return pool.price_per_node_hour * replica_share(pool, gpus)


def cost_per_million_tokens(price_per_replica_hour: float, tokens_per_second: float) -> float:
    """price of a replica-hour / (tokens per second x 3600) x 10^6."""
    return price_per_replica_hour / (tokens_per_second * SECONDS_PER_HOUR) * TOKENS


def significant(value: float, digits: int = 4) -> float:
    """``value`` to ``digits`` significant figures: what status.plan carries (a price times a
    share has more digits than any price list)."""
    return float(f"{value:.{digits}g}")


def money(value: float) -> str:
    """A price for people: cents from 1 up, three significant figures below."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"
