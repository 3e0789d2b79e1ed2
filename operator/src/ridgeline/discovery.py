"""Node pools from Nodes' GPU Feature Discovery labels, merged with declared pools.

Nodes group into a pool by (product, GPUs per node, driver, GPU sharing). The newer
``cuda.driver-version.*`` keys win; the deprecated ``cuda.driver.*`` keys are the fallback (the
rendered affinity matches either). A pool's CPU and memory are the smallest allocatable of its
nodes: the worker pods are sized from them.

Time-sliced GPUs (GFD's ``<product>-SHARED``) are a pool only where ``nvidia.com/gpu.replicas``
says how many replicas share one GPU: each replica is planned on that share.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ridgeline.planner.pools import GIB, NodePool
from ridgeline.quantity import parse_quantity

GFD = "nvidia.com/"
SHARED_SUFFIX = "-SHARED"


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


def _shared_by(labels: Mapping[str, str]) -> int | None:
    """Replicas per GPU on a time-sliced node; None where the node does not say."""
    raw = labels.get(f"{GFD}gpu.replicas", "")
    return int(raw) if raw.isdigit() and int(raw) > 1 else None


def pool_name(product: str, gpus: int, driver: str | None) -> str:
    raw = f"{product}-{gpus}x-{driver or 'nodriver'}".lower()
    return re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")[:63]


@dataclass
class _Group:
    nodes: int = 0
    memory_mib: int = 0
    cpus: int | None = None
    memory_gib: float | None = None


def _quantity(allocatable: Mapping[str, str], key: str) -> float | None:
    try:
        return float(parse_quantity(allocatable[key]))
    except (KeyError, ValueError):
        return None


def discover_pools(
    nodes: Iterable[tuple[Mapping[str, str], Mapping[str, str], bool]],
) -> list[NodePool]:
    """``nodes``: (labels, allocatable, schedulable) per Node. GPU nodes only."""
    groups: dict[tuple[str, int, str | None, int | None], _Group] = {}
    for labels, allocatable, schedulable in nodes:
        product = labels.get(f"{GFD}gpu.product")
        if not product or not schedulable:
            continue
        shared_by = _shared_by(labels)
        if product.upper().endswith(SHARED_SUFFIX) and shared_by is None:
            continue  # a shared GPU without its share: cannot be planned on
        try:
            gpus = int(allocatable.get("nvidia.com/gpu", labels.get(f"{GFD}gpu.count", "0")) or 0)
        except ValueError:
            continue
        if gpus <= 0:
            continue
        group = groups.setdefault((product, gpus, _driver(labels), shared_by), _Group())
        group.nodes += 1
        memory = labels.get(f"{GFD}gpu.memory", "")
        if memory.isdigit():
            group.memory_mib = int(memory)
        # The smallest node sets the pool's size: a pod sized from it fits on every node.
        cpu = _quantity(allocatable, "cpu")
        if cpu is not None and cpu >= 1:
            cores = math.floor(cpu)
            group.cpus = cores if group.cpus is None else min(group.cpus, cores)
        mem = _quantity(allocatable, "memory")
        if mem is not None and mem >= GIB:
            gib = math.floor(mem / GIB)
            group.memory_gib = gib if group.memory_gib is None else min(group.memory_gib, gib)
    return [
        NodePool(
            name=pool_name(product, gpus, driver)
            if shared_by is None
            else pool_name(f"{product}-{shared_by}", gpus, driver),
            gpu_product=product,
            gpus_per_node=gpus,
            driver_version=driver,
            nodes=g.nodes,
            gpu_memory_mib=g.memory_mib or None,
            cpus=g.cpus,
            memory_gib=g.memory_gib,
            shared_by=shared_by,
        )
        for (product, gpus, driver, shared_by), g in sorted(
            groups.items(), key=lambda kv: str(kv[0])
        )
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
