"""Node cache PersistentVolumes that no model holds any more, deleted.

A model's volumes go with the model (``node_cache.delete_volumes``), but a delete the operator
never saw leaves them behind: it was down when the model went, or a pass that made the volume
ran while the model was being deleted. PersistentVolumes are cluster-scoped, so no owner
reference reaches them; their claims, owned by the model, do go. A Retain volume whose claim
went is ``Released``: that is the sign. A volume whose claim was never made, or went before it
bound, stays ``Available``: one older than ``UNBOUND_GRACE_S`` with no claim goes too (younger,
it may be a pass's volume whose claim is being made). Deleting a live model's volume is
harmless: its next pass makes it again, as ``_replace_if_released`` does for a Released one.
The node's files are the agent's; it frees them after its grace period."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ridgeline.render import node_cache as render
from ridgeline_operator.kube import REQUEST_TIMEOUT_S

# The poll sweeps at start (a delete missed while the operator was down) and then this often.
SWEEP_EVERY_S = 60.0
# Far longer than a pass takes between creating a volume and its claim.
UNBOUND_GRACE_S = 600.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeenVolume:
    name: str
    phase: str
    # (namespace, name) of the claim it is reserved for
    claim: tuple[str, str] | None
    age_s: float


def orphaned(volumes: Iterable[SeenVolume], claim_exists: Callable[[str, str], bool]) -> list[str]:
    """The volumes no model holds: Released ones, and unbound ones past the grace whose claim
    does not exist (``claim_exists`` is asked only for those)."""
    out = []
    for volume in volumes:
        stale = volume.phase in ("Available", "Pending") and volume.age_s > UNBOUND_GRACE_S
        if volume.phase == "Released" or (
            stale and (volume.claim is None or not claim_exists(*volume.claim))
        ):
            out.append(volume.name)
    return out


def _seen(item: Any, now: datetime) -> SeenVolume:
    ref = item.spec.claim_ref if item.spec is not None else None
    created = item.metadata.creation_timestamp
    return SeenVolume(
        name=item.metadata.name,
        phase=(item.status.phase if item.status is not None else None) or "",
        claim=(ref.namespace, ref.name) if ref is not None and ref.name else None,
        age_s=(now - created).total_seconds() if created is not None else 0.0,
    )


def sweep(api: Any) -> list[str]:
    """Delete the orphaned node cache volumes; returns their names. One that fails to go is
    logged and tried again on the next sweep; it never keeps the others."""
    core = client.CoreV1Api(api)
    listed: Any = core.list_persistent_volume(
        label_selector=render.VOLUMES_SELECTOR, _request_timeout=REQUEST_TIMEOUT_S
    )
    now = datetime.now(UTC)
    volumes = [_seen(item, now) for item in listed.items if not item.metadata.deletion_timestamp]

    def claim_exists(namespace: str, name: str) -> bool:
        try:
            core.read_namespaced_persistent_volume_claim(
                name, namespace, _request_timeout=REQUEST_TIMEOUT_S
            )
        except ApiException as exc:
            # Anything but "not found" (a 403, a 500) keeps the volume: only a claim known to
            # be gone makes it an orphan.
            return bool(exc.status != 404)
        return True

    deleted = []
    for name in orphaned(volumes, claim_exists):
        try:
            core.delete_persistent_volume(name, _request_timeout=REQUEST_TIMEOUT_S)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("deleting orphaned PersistentVolume %s: HTTP %s", name, exc.status)
            continue
        log.info("deleted PersistentVolume %s: no model holds it any more", name)
        deleted.append(name)
    return deleted
