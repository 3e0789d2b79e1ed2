"""Node pools from Nodes' GPU Feature Discovery labels, merged with declared pools.

Nodes group into a pool by (product, GPUs per node, driver, GPU sharing). The newer
``cuda.driver-version.*`` keys win; the deprecated ``cuda.driver.*`` keys are the fallback (the
rendered affinity matches either). A pool's CPU and memory are the smallest allocatable of its
nodes: the worker pods are sized from them.

Time-sliced GPUs (GFD's ``<product>-SHARED``) are a pool only where ``nvidia.com/gpu.replicas``
says how many replicas share one GPU: each replica is planned on that share.

A declared pool with ``nodeLabels`` owns the nodes carrying those labels: they form no
discovered pool of their own (the pool keeps its name, so the first node of a pool scaling from
zero re-plans nothing), and what they report (product, GPU count, driver, size) is checked
against the declaration; each disagreement is kept on the pool for a condition on its models.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ridgeline.compat.cuda_driver import parse_version
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
    disk_gib: float | None = None


def _quantity(allocatable: Mapping[str, str], key: str) -> float | None:
    try:
        return float(parse_quantity(allocatable[key]))
    except (KeyError, ValueError):
        return None


NodeFacts = tuple[Mapping[str, str], Mapping[str, str], bool]


def _smaller(old: float | None, new: float) -> float:
    return new if old is None else min(old, new)


def owner(labels: Mapping[str, str], declared: Sequence[NodePool]) -> NodePool | None:
    """The declared pool whose nodeLabels a node carries (the first, where several match)."""
    return next(
        (
            p
            for p in declared
            if p.declared_by_labels and all(labels.get(k) == v for k, v in p.node_labels.items())
        ),
        None,
    )


def discover_pools(nodes: Iterable[NodeFacts], declared: Sequence[NodePool] = ()) -> list[NodePool]:
    """``nodes``: (labels, allocatable, schedulable) per Node. GPU nodes only; a node that a
    declared pool's nodeLabels claim is that pool's, not discovered."""
    groups: dict[tuple[str, int, str | None, int | None], _Group] = {}
    for labels, allocatable, schedulable in nodes:
        product = labels.get(f"{GFD}gpu.product")
        if not product or not schedulable or owner(labels, declared) is not None:
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
            group.memory_gib = _smaller(group.memory_gib, math.floor(mem / GIB))
        disk = _quantity(allocatable, "ephemeral-storage")
        if disk is not None and disk >= GIB:
            group.disk_gib = _smaller(group.disk_gib, math.floor(disk / GIB))
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
            ephemeral_storage_gib=g.disk_gib,
            shared_by=shared_by,
        )
        for (product, gpus, driver, shared_by), g in sorted(
            groups.items(), key=lambda kv: str(kv[0])
        )
    ]


def _disagreements(
    pool: NodePool, name: str, labels: Mapping[str, str], alloc: Mapping[str, str]
) -> list[str]:
    """What one node with the pool's nodeLabels reports against the pool's declaration (only
    what it reports: a node GFD has not labelled yet disagrees with nothing)."""
    out: list[str] = []
    where = f"node {name} (with pool {pool.name}'s nodeLabels)"
    product = labels.get(f"{GFD}gpu.product")
    if product and not pool.is_cpu and product.lower() != pool.gpu_product.lower():
        out.append(f"{where} has {product}, the pool declares {pool.gpu_product}")
    driver = _driver(labels)
    if driver and pool.driver_version:
        try:
            older = parse_version(driver) < parse_version(pool.driver_version)
        except ValueError:
            older = False
        if older:
            out.append(
                f"{where} reports driver {driver}, older than the declared {pool.driver_version}"
            )
    gpus = _quantity(alloc, "nvidia.com/gpu")
    if gpus is not None and not pool.is_cpu and int(gpus) != pool.gpus_per_node:
        out.append(f"{where} has {int(gpus)} GPUs, the pool declares {pool.gpus_per_node}")
    cpu = _quantity(alloc, "cpu")
    if cpu is not None and pool.cpus and cpu < pool.cpus:
        out.append(f"{where} has {cpu:g} allocatable CPUs, the pool declares {pool.cpus}")
    mem = _quantity(alloc, "memory")
    if mem is not None and pool.memory_gib and mem / GIB < pool.memory_gib:
        out.append(
            f"{where} has {mem / GIB:.1f} GiB allocatable memory, the pool declares "
            f"{pool.memory_gib:g}"
        )
    return out


def check_declared(nodes: Mapping[str, NodeFacts], declared: Sequence[NodePool]) -> list[NodePool]:
    """The declared pools, each labelled one with what its nodes disagree on (by node name)."""
    found: dict[str, list[str]] = {p.name: [] for p in declared}
    for name in sorted(nodes):
        labels, allocatable, schedulable = nodes[name]
        pool = owner(labels, declared)
        if pool is not None and schedulable:
            found[pool.name] += _disagreements(pool, name, labels, allocatable)
    return [p.with_mismatches(found[p.name]) if p.declared_by_labels else p for p in declared]


def merge_pools(discovered: list[NodePool], declared: list[NodePool]) -> list[NodePool]:
    """Declared pools stand for nodes that may not exist yet; a discovered pool of the same
    product, GPU count and driver replaces its declared twin, unless the declared pool selects
    on its own nodeLabels (then its nodes were never discovered as another pool)."""
    seen = {(p.gpu_product.lower(), p.gpus_per_node, p.driver_version) for p in discovered}
    extra = [
        p
        for p in declared
        if p.declared_by_labels
        or (p.gpu_product.lower(), p.gpus_per_node, p.driver_version) not in seen
    ]
    return [*discovered, *extra]


def pools_from_nodes(nodes: Mapping[str, NodeFacts], declared: list[NodePool]) -> list[NodePool]:
    """Every pool a model may plan on: discovered from ``nodes`` (by name) and declared."""
    checked = check_declared(nodes, declared)
    return merge_pools(discover_pools(nodes.values(), declared), checked)
