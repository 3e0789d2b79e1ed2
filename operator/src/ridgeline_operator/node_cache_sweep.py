"""Node cache PersistentVolumes that no model holds any more, deleted.

A model's volumes go with the model (``node_cache.delete_volumes``), but a delete the operator
never saw leaves them behind: it was down when the model went, or a pass that made the volume
ran while the model was being deleted. PersistentVolumes are cluster-scoped, so no owner
reference reaches them; their claims, owned by the model, do go. A Retain volume whose claim
went is ``Released``: that is the sign. A volume whose claim was never made, or went before it
bound, stays ``Available``: one seen for over ``UNBOUND_GRACE_S`` with no claim goes too
(younger, it may be a pass's volume whose claim is being made). Age is counted on this
process's clock from when it first listed the volume, so a clock that differs from the API
server's cannot make a new volume look old. A delete names the uid and resourceVersion it
listed: a volume a pass has made again under the same name meanwhile (``_replace_if_released``)
or that has changed since is left alone. Deleting a live model's volume is harmless: its next
pass makes it again. The node's files are the agent's; it frees them after its grace period."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ridgeline.render import node_cache as render
from ridgeline_operator.kube import REQUEST_TIMEOUT_S

# The first sweep comes this long after start (a delete missed while the operator was down),
# then one every SWEEP_EVERY_S, in a task of its own beside the report poll.
FIRST_SWEEP_S = 5.0
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
    # since this process first listed it
    age_s: float
    uid: str = ""
    resource_version: str = ""


def orphaned(
    volumes: Iterable[SeenVolume], claim_exists: Callable[[str, str], bool]
) -> list[SeenVolume]:
    """The volumes no model holds: Released ones, and unbound ones past the grace whose claim
    does not exist (``claim_exists`` is asked only for those)."""
    out = []
    for volume in volumes:
        stale = volume.phase in ("Available", "Pending") and volume.age_s > UNBOUND_GRACE_S
        if volume.phase == "Released" or (
            stale and (volume.claim is None or not claim_exists(*volume.claim))
        ):
            out.append(volume)
    return out


class Sweeper:
    """Sweeps; remembers when it first saw each volume (by uid)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._first_seen: dict[str, float] = {}

    def sweep(self, api: Any) -> list[str]:
        """Delete the orphaned node cache volumes; returns their names. One that fails to go
        is logged and tried again on the next sweep; it never keeps the others."""
        core = client.CoreV1Api(api)
        listed: Any = core.list_persistent_volume(
            label_selector=render.VOLUMES_SELECTOR, _request_timeout=REQUEST_TIMEOUT_S
        )
        live = [item for item in listed.items if not item.metadata.deletion_timestamp]
        now = self.clock()
        self._first_seen = {
            item.metadata.uid: self._first_seen.get(item.metadata.uid, now) for item in live
        }
        volumes = [_seen(item, now - self._first_seen[item.metadata.uid]) for item in live]
        deleted = []
        for volume in orphaned(volumes, lambda ns, name: _claim_exists(core, ns, name)):
            if _delete(core, volume):
                deleted.append(volume.name)
        return deleted


def _seen(item: Any, age_s: float) -> SeenVolume:
    ref = item.spec.claim_ref if item.spec is not None else None
    return SeenVolume(
        name=item.metadata.name,
        phase=(item.status.phase if item.status is not None else None) or "",
        claim=(ref.namespace, ref.name) if ref is not None and ref.name else None,
        age_s=age_s,
        uid=item.metadata.uid or "",
        resource_version=item.metadata.resource_version or "",
    )


def _claim_exists(core: client.CoreV1Api, namespace: str, name: str) -> bool:
    """Only a claim known to be gone (404) makes its volume an orphan; anything else (a 403, a
    timeout) keeps it."""
    try:
        core.read_namespaced_persistent_volume_claim(
            name, namespace, _request_timeout=REQUEST_TIMEOUT_S
        )
    except ApiException as exc:
        return bool(exc.status != 404)
    except Exception as exc:
        log.warning("reading claim %s/%s: %s: kept its volume", namespace, name, exc)
        return True
    return True


def _delete(core: client.CoreV1Api, volume: SeenVolume) -> bool:
    """Delete the volume as listed: a 409 (made again, or changed, since) or a 404 leaves it."""
    preconditions = client.V1Preconditions(
        uid=volume.uid or None, resource_version=volume.resource_version or None
    )
    try:
        core.delete_persistent_volume(
            volume.name,
            body=client.V1DeleteOptions(preconditions=preconditions),
            _request_timeout=REQUEST_TIMEOUT_S,
        )
    except ApiException as exc:
        if exc.status not in (404, 409):
            log.warning("deleting orphaned PersistentVolume %s: HTTP %s", volume.name, exc.status)
        return False
    except Exception as exc:  # a timeout, a dropped connection: the others still go
        log.warning("deleting orphaned PersistentVolume %s: %s", volume.name, exc)
        return False
    log.info("deleted PersistentVolume %s: no model holds it any more", volume.name)
    return True


SWEEPER = Sweeper()


async def sweep_loop() -> None:
    """The operator's sweeps, while the node cache is enabled (started with the report poll)."""
    # Here, not at the top: reconcile imports node_cache, which imports this module.
    from ridgeline_operator.reconcile import STATE

    delay = FIRST_SWEEP_S
    while True:
        await asyncio.sleep(delay)
        if not STATE.config.node_cache.enabled or STATE.api is None:
            delay = FIRST_SWEEP_S
            continue
        delay = SWEEP_EVERY_S
        try:
            await asyncio.to_thread(SWEEPER.sweep, STATE.api)
        except Exception as exc:  # a failed list: the next sweep lists again
            log.warning("sweeping orphaned node cache volumes: %s", exc)
