"""The node pools, derived once per change of the node set, not once per reconcile.

Node events arrive by the hundred (kwok and kubelets refresh heartbeats in Node status); only a
change of what pools are made of (labels, allocatable, schedulable and Ready) marks the cache
stale, and the pools are derived again, by ``discover_pools``, when the burst has passed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ridgeline.discovery import merge_pools, pools_from_nodes
from ridgeline.node_prices import NodePrices, price_pools
from ridgeline.planner import NodePool

# What discover_pools reads of a Node: labels, allocatable, schedulable (and Ready).
NodeFacts = tuple[dict[str, str], dict[str, str], bool]


def node_facts(
    labels: Mapping[str, str], spec: Mapping[str, Any], status: Mapping[str, Any]
) -> NodeFacts:
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    schedulable = not spec.get("unschedulable", False)
    return dict(labels), dict(status.get("allocatable") or {}), schedulable and ready


class PoolCache:
    """Nodes by name and the pools derived from them (plus the declared pools)."""

    def __init__(self, declared: list[NodePool] | None = None) -> None:
        self._declared = list(declared or [])
        self._prices = NodePrices()
        self._nodes: dict[str, NodeFacts] = {}
        self._pools: list[NodePool] = merge_pools([], self._declared)
        self._stale = False
        self.derivations = 0

    @property
    def pools(self) -> list[NodePool]:
        """The pools as last derived (a list that is replaced, never changed in place)."""
        return self._pools

    @property
    def stale(self) -> bool:
        return self._stale

    def set_declared(self, declared: list[NodePool]) -> None:
        if declared != self._declared:
            self._declared = list(declared)
            self._stale = True

    def set_prices(self, prices: NodePrices) -> None:
        """The chart's price map (serving.nodePrices): a change prices the pools again."""
        if prices != self._prices:
            self._prices = prices
            self._stale = True

    def node(self, name: str, facts: NodeFacts | None) -> bool:
        """Record a Node (None: deleted); True if that changes what pools are made of."""
        if facts is None:
            changed = self._nodes.pop(name, None) is not None
        else:
            changed = self._nodes.get(name) != facts
            self._nodes[name] = facts
        self._stale = self._stale or changed
        return changed

    def derive(self) -> set[str]:
        """Derive the pools again if stale; the names of the pools that came, went or changed.

        A pool that only grew or shrank has not changed: no decision depends on its node count
        (a running plan stays where it is, and Ray's autoscaler places the replicas), and
        nodes join and leave a pool one by one, which would wake its models again and again."""
        if not self._stale:
            return set()
        self._stale = False
        self.derivations += 1
        before = {p.name: _sans_count(p) for p in self._pools}
        pools = pools_from_nodes(self._nodes, self._declared)
        pools = price_pools(pools, self._nodes.values(), self._prices, self._declared)
        after = {p.name: _sans_count(p) for p in pools}
        self._pools = pools
        return {n for n in before.keys() | after.keys() if before.get(n) != after.get(n)}


def _sans_count(pool: NodePool) -> NodePool:
    return pool.model_copy(update={"nodes": 0})
