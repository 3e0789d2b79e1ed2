"""The agent's Prometheus metrics (port 9450, ``/metrics``), each labelled with its node. A
registry of its own: tests build several agents in one process."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from ridgeline_serving.node_cache.decide import Need

P = "ridgeline_node_cache_"


class Metrics:
    def __init__(self, node: str, registry: CollectorRegistry | None = None) -> None:
        self.node = node
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._downloaded = Counter(
            f"{P}bytes_downloaded",
            "Bytes the agent downloaded from the object store into the node cache.",
            ["node", "directory"],
            registry=r,
        )
        self._hits = Counter(
            f"{P}hits",
            "Checkpoint versions found complete and verified without a download.",
            ["node", "directory"],
            registry=r,
        )
        self._misses = Counter(
            f"{P}misses",
            "Fills started (a version not on the node).",
            ["node", "directory"],
            registry=r,
        )
        self._evictions = Counter(
            f"{P}evictions",
            "Versions deleted, by reason (budget, unused, stale_version, corrupt).",
            ["node", "reason"],
            registry=r,
        )
        self._used = Gauge(f"{P}used_bytes", "Bytes the cache uses.", ["node"], registry=r)
        self._budget = Gauge(f"{P}budget_bytes", "The size budget (0: none).", ["node"], registry=r)
        labels = ["node", "directory", "model_namespace", "model"]
        self._present = Gauge(
            f"{P}checkpoint_bytes", "Bytes of the checkpoint present.", labels, registry=r
        )
        self._total = Gauge(
            f"{P}checkpoint_total_bytes", "Bytes of the checkpoint in all.", labels, registry=r
        )
        self._shown: set[tuple[str, str, str, str]] = set()

    def downloaded(self, directory: str, n: int) -> None:
        if n > 0:
            self._downloaded.labels(self.node, directory).inc(n)

    def hit(self, directory: str) -> None:
        self._hits.labels(self.node, directory).inc()

    def miss(self, directory: str) -> None:
        self._misses.labels(self.node, directory).inc()

    def evicted(self, reason: str) -> None:
        self._evictions.labels(self.node, reason).inc()

    def usage(self, used: int, budget: int) -> None:
        self._used.labels(self.node).set(used)
        self._budget.labels(self.node).set(budget)

    def checkpoints(
        self, needs: Mapping[str, Need], present: Mapping[str, tuple[int, int]]
    ) -> None:
        """Per model: bytes present and in all of its checkpoint; models gone lose theirs."""
        shown = set()
        for directory, need in needs.items():
            have, total = present.get(directory, (0, need.bytes))
            for ref in need.models:
                key = (self.node, directory, ref.namespace, ref.name)
                self._present.labels(*key).set(have)
                self._total.labels(*key).set(total)
                shown.add(key)
        for key in self._shown - shown:
            self._present.remove(*key)
            self._total.remove(*key)
        self._shown = shown
