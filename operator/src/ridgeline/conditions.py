"""Conditions in the Kubernetes convention: recomputed each pass, lastTransitionTime kept
unless the status flips."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ridgeline.api.inference_model import Condition

ORDER = ("Planned", "Compatible", "Applied", "Ready")
Status = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Transition:
    type: str
    old: str | None
    new: Condition


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: Status,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[Condition]:
    old = next((c for c in conditions if c.type == type_), None)
    since = old.last_transition_time if old is not None and old.status == status else now
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=since,
    )
    out = [c for c in conditions if c.type != type_] + [new]
    return sorted(out, key=lambda c: ORDER.index(c.type) if c.type in ORDER else len(ORDER))


def transitions(old: list[Condition], new: list[Condition]) -> list[Transition]:
    """Conditions whose status or reason changed: each is worth one Event."""
    before = {c.type: c for c in old}
    return [
        Transition(c.type, before[c.type].status if c.type in before else None, c)
        for c in new
        if c.type not in before
        or (before[c.type].status, before[c.type].reason) != (c.status, c.reason)
    ]
