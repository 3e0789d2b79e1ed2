"""Node pools from Nodes' GPU Feature Discovery labels, merged with declared pools.

Nodes group into a pool by (product, GPUs per node, driver). The newer
``cuda.driver-version.*`` keys win; the deprecated ``cuda.driver.*`` keys are the fallback.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ridgeline.planner.pools import NodePool

GFD = "nvidia.com/"


def _driver(labels: Mapping[str, str]) -> str | None:
    full = labels.get(f"{GFD}cuda.driver-version.full")
    if full:
        return full
    for prefix, rev in (("cuda.driver-version", "revision"), ("cuda.driver", "rev")):
        major, minor = labels.get(f"{GFD}{prefix}.major"), labels.get(f"{GFD}{prefix}.minor")
        if major and minor:
            revision = labels.get(f"{GFD}{prefix}.{rev}")
            return f"{major}.{minor}.{revision}" if revision else f"{major}.{minor}"
    return None


def pool_name(product: str, gpus: int, driver: str | None) -> str:
    raw = f"{product}-{gpus}x-{driver or 'nodriver'}".lower()
    return re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")[:63]


def discover_pools(
    nodes: Iterable[tuple[Mapping[str, str], Mapping[str, str], bool]],
) -> list[NodePool]:
    """``nodes``: (labels, allocatable, schedulable) per Node. GPU nodes only."""
    groups: dict[tuple[str, int, str | None], dict[str, int]] = {}
    for labels, allocatable, schedulable in nodes:
        product = labels.get(f"{GFD}gpu.product")
        if not product or not schedulable:
            continue
        gpus = int(allocatable.get("nvidia.com/gpu", labels.get(f"{GFD}gpu.count", "0")) or 0)
        if gpus <= 0:
            continue
        key = (product, gpus, _driver(labels))
        group = groups.setdefault(key, {"nodes": 0, "memory": 0})
        group["nodes"] += 1
        memory = labels.get(f"{GFD}gpu.memory", "")
        if memory.isdigit():
            group["memory"] = int(memory)
    return [
        NodePool(
            name=pool_name(product, gpus, driver),
            gpu_product=product,
            gpus_per_node=gpus,
            driver_version=driver,
            nodes=g["nodes"],
            gpu_memory_mib=g["memory"] or None,
        )
        for (product, gpus, driver), g in sorted(groups.items(), key=lambda kv: str(kv[0]))
    ]


def merge_pools(discovered: list[NodePool], declared: list[NodePool]) -> list[NodePool]:
    """Declared pools stand for nodes that may not exist yet; a discovered pool of the same
    product, GPU count and driver replaces its declared twin."""
    seen = {(p.gpu_product.lower(), p.gpus_per_node, p.driver_version) for p in discovered}
    extra = [
        p
        for p in declared
        if (p.gpu_product.lower(), p.gpus_per_node, p.driver_version) not in seen
    ]
    return [*discovered, *extra]
