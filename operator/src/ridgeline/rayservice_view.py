"""What a reconcile reads of a KubeRay RayService, typed: the hashes Ridgeline annotated it with,
the RayClusters its service statuses name (active first, then pending) with the worker counts
KubeRay copied into them, and its Ready condition. ``RayServiceView.from_object`` is the one walk
over ``activeServiceStatus`` and ``pendingServiceStatus``; the rest of the object stays out of
the operator's memory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ridgeline.render.rayservice import CLUSTER_HASH, SPEC_HASH

SIDES = ("activeServiceStatus", "pendingServiceStatus")


@dataclass(frozen=True)
class WorkerCounts:
    """A RayCluster's worker replicas, from its status (or the RayService's copy of it)."""

    desired: int = 0
    ready: int = 0
    # Whether the status said either (a RayCluster just created has no status yet).
    reported: bool = False

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> WorkerCounts:
        status = status or {}
        return cls(
            desired=int(status.get("desiredWorkerReplicas") or 0),
            ready=int(status.get("readyWorkerReplicas") or 0),
            reported=any(k in status for k in ("desiredWorkerReplicas", "readyWorkerReplicas")),
        )


@dataclass(frozen=True)
class ServiceCluster:
    name: str
    # The copy in the RayService's status: it may lag the RayCluster's own.
    workers: WorkerCounts


@dataclass(frozen=True)
class ReadyCondition:
    status: str
    reason: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class RayServiceView:
    spec_hash: str | None = None
    cluster_hash: str | None = None
    clusters: tuple[ServiceCluster, ...] = ()
    ready: ReadyCondition | None = None

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> RayServiceView:
        """From a RayService as the API server returns it (``metadata`` and ``status``)."""
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        status = obj.get("status") or {}
        clusters = tuple(
            ServiceCluster(
                side["rayClusterName"], WorkerCounts.from_status(side.get("rayClusterStatus"))
            )
            for side in (status.get(key) or {} for key in SIDES)
            if side.get("rayClusterName")
        )
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        return cls(
            spec_hash=annotations.get(SPEC_HASH),
            cluster_hash=annotations.get(CLUSTER_HASH),
            clusters=clusters,
            ready=None
            if ready is None
            else ReadyCondition(
                str(ready.get("status")), ready.get("reason"), ready.get("message")
            ),
        )

    @property
    def cluster_names(self) -> list[str]:
        return [c.name for c in self.clusters]
