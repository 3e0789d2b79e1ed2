"""Checks of a plan's pool beyond the image: do the nodes that a declared pool's labels select
agree with its declaration, and does the weight cache fit the pool's kubelet disk."""

from __future__ import annotations

import math

from ridgeline.conditions import Reason, Status
from ridgeline.planner.pools import GIB, NodePool
from ridgeline.platform_config import PlatformConfig
from ridgeline.render.pods import CACHE_HEADROOM_BYTES, ephemeral_storage_request

# How many disagreements a condition's message lists (the rest are counted).
LISTED = 3


def nodes_condition(pool: NodePool) -> tuple[Status, Reason, str] | None:
    """NodesMatchPool for a declared pool with nodeLabels (None for any other pool): the
    platform team vouches for its driver, and a node that says otherwise is named here."""
    if not pool.declared_by_labels:
        return None
    found = pool.mismatches
    if not found:
        return (
            "True",
            Reason.NODES_MATCH,
            f"nodes with pool {pool.name}'s nodeLabels report what it declares (or none "
            "reports yet)",
        )
    driver = any("reports driver" in m for m in found)
    more = f"; and {len(found) - LISTED} more" if len(found) > LISTED else ""
    message = "; ".join(found[:LISTED]) + more
    if driver:
        message += (
            f". The image was chosen for the declared driver {pool.driver_version}: fix the "
            "pool's driverVersion or the nodes"
        )
    reason = Reason.DRIVER_OLDER_THAN_DECLARED if driver else Reason.NODE_DISAGREES
    return "False", reason, message


def cache_fit_error(config: PlatformConfig, pool: NodePool, cache_bytes: int) -> str | None:
    """With the emptyDir cache a worker pod requests the checkpoint's size of ephemeral storage;
    where the pool's nodes have less, the pod would stay Pending ("Insufficient
    ephemeral-storage"): say so instead."""
    if config.weights_cache_volume != "emptyDir" or pool.ephemeral_storage_gib is None:
        return None
    need_gib = math.ceil((cache_bytes + CACHE_HEADROOM_BYTES) / GIB)
    if need_gib <= pool.ephemeral_storage_gib:
        return None
    return (
        f"the weight cache needs {ephemeral_storage_request(cache_bytes)} of ephemeral storage "
        f"(checkpoint {cache_bytes / GIB:.1f} GiB + {CACHE_HEADROOM_BYTES // GIB} GiB), and pool "
        f"{pool.name}'s nodes have {pool.ephemeral_storage_gib:g} GiB allocatable: give the "
        "pool larger kubelet disks (ephemeralStorageGiB), or set weightsCacheVolume: hostPath "
        "on a disk that holds the checkpoint"
    )
