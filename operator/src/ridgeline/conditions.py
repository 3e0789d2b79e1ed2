"""Conditions in the Kubernetes convention: recomputed each pass, lastTransitionTime kept
unless the status flips. Every type and reason the operator writes is a member of one enum."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from ridgeline.api.inference_model import Condition
from ridgeline.api.plan import Bound


class ConditionType(enum.StrEnum):
    PLANNED = "Planned"
    COMPATIBLE = "Compatible"
    APPLIED = "Applied"
    READY = "Ready"
    # Only on models planned on a declared pool with nodeLabels.
    NODES_MATCH_POOL = "NodesMatchPool"
    # Only where the platform enables the node weight cache, on planned models.
    CACHED = "Cached"


class Reason(enum.StrEnum):
    # Planned
    BATCH_TARGET_COMPUTE = "BatchTargetCompute"
    BATCH_TARGET_BANDWIDTH = "BatchTargetBandwidth"
    BATCH_TARGET_LATENCY = "BatchTargetLatency"
    BATCH_TARGET_MEMORY = "BatchTargetMemory"
    MODEL_UNREADABLE = "ModelUnreadable"
    INFEASIBLE = "Infeasible"
    # Compatible
    IMAGE_SELECTED = "ImageSelected"
    NO_COMPATIBLE_IMAGE = "NoCompatibleImage"
    CACHE_DOES_NOT_FIT = "CacheDoesNotFit"
    # Applied
    APPLIED = "Applied"
    APPLY_REFUSED = "ApplyRefused"
    # Ready (KubeRay's own reason, when it gives one, goes into the message)
    READY = "Ready"
    NOT_READY = "NotReady"
    RAYSERVICE_MISSING = "RayServiceMissing"
    RAYSERVICE_STARTING = "RayServiceStarting"
    # NodesMatchPool
    NODES_MATCH = "NodesMatch"
    DRIVER_OLDER_THAN_DECLARED = "DriverOlderThanDeclared"
    NODE_DISAGREES = "NodeDisagrees"
    # Cached (node_cache_status.py)
    CACHE_COMPLETE = "Complete"
    CACHE_FILLING = "Filling"
    CACHE_WAITING = "Waiting"
    CACHE_FAILED = "Failed"
    NO_AGENT = "NoAgent"

    @classmethod
    def batch_target(cls, bound: Bound) -> Reason:
        return {
            Bound.COMPUTE: cls.BATCH_TARGET_COMPUTE,
            Bound.BANDWIDTH: cls.BATCH_TARGET_BANDWIDTH,
            Bound.LATENCY: cls.BATCH_TARGET_LATENCY,
            Bound.MEMORY: cls.BATCH_TARGET_MEMORY,
        }[bound]


_RANK = {str(t): i for i, t in enumerate(ConditionType)}
Status = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Transition:
    type: str
    old: str | None
    new: Condition


def set_condition(
    conditions: list[Condition],
    type_: ConditionType,
    status: Status,
    reason: Reason,
    message: str,
    generation: int | None,
    now: str,
) -> list[Condition]:
    old = next((c for c in conditions if c.type == type_), None)
    since = old.last_transition_time if old is not None and old.status == status else now
    new = Condition(
        type=str(type_),
        status=status,
        reason=str(reason),
        message=message,
        observed_generation=generation,
        last_transition_time=since,
    )
    out = [c for c in conditions if c.type != type_] + [new]
    return sorted(out, key=lambda c: _RANK.get(c.type, len(_RANK)))


def is_true(conditions: list[Condition], type_: ConditionType) -> bool:
    return any(c.type == type_ and c.status == "True" for c in conditions)


def transitions(old: list[Condition], new: list[Condition]) -> list[Transition]:
    """Conditions whose status or reason changed: each is worth one Event."""
    before = {c.type: c for c in old}
    return [
        Transition(c.type, before[c.type].status if c.type in before else None, c)
        for c in new
        if c.type not in before
        or (before[c.type].status, before[c.type].reason) != (c.status, c.reason)
    ]


def drop_condition(conditions: list[Condition], type_: ConditionType) -> list[Condition]:
    return [c for c in conditions if c.type != type_]
