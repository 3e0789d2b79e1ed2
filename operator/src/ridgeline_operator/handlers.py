"""kopf registration: thin handlers around one reconcile pass (reconcile.py).

What triggers a pass: a change of an InferenceModel's spec (kopf's create/update/resume
handlers); a change of its RayService or RayClusters, or of the node pool it is planned on
(an in-memory wake-up of that model's daemon); and a slow resync, spread at random.
Over 300 lines: kopf registers handlers at import, and one module holds them all."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kopf

from ridgeline.api.inference_model import GROUP, PLURAL, VERSION
from ridgeline.config_files import load_platform_config
from ridgeline.discovery import GFD
from ridgeline.rayservice_view import RayServiceView, WorkerCounts
from ridgeline.render.meta import MODEL_LABEL
from ridgeline_operator import (
    api_session,  # noqa: F401  (its login handler: a bounded pool)
    kube,
    metrics,
)
from ridgeline_operator.diffbase import ModelsOnlyDiffBase
from ridgeline_operator.node_pools import node_facts
from ridgeline_operator.reconcile import STATE, post_events, reconcile, status_change
from ridgeline_operator.wakeups import Trigger, first_resync_s, next_resync_s

CONFIG_ENV = "RIDGELINE_CONFIG"
RESYNC_S = float(os.environ.get("RIDGELINE_RESYNC_SECONDS", "300"))
# Node events come in bursts (a node pool scaling up): pools are derived once the burst passed.
POOLS_SETTLE_S = 0.5
ERROR_S = 10.0  # a wake-up pass that failed unexpectedly is tried again after this
GPU_PRODUCT = f"{GFD}gpu.product"
OWNED = {"app.kubernetes.io/managed-by": "ridgeline"}  # on every RayService and its RayClusters
OWNED_SELECTOR = ",".join(f"{k}={v}" for k, v in OWNED.items())

log = logging.getLogger(__name__)


@kopf.on.startup()
def configure(*, settings: kopf.OperatorSettings, logger: Any, **_: Any) -> None:
    path = os.environ.get(CONFIG_ENV)
    if path:
        STATE.config = load_platform_config(Path(path))
    STATE.api = kube.load_client()
    STATE.pools.set_declared(STATE.config.node_pools)
    STATE.pools.set_prices(STATE.config.node_prices)
    for node in kube.list_nodes(STATE.api, GPU_PRODUCT):
        meta = node["metadata"]
        STATE.pools.node(
            meta["name"],
            node_facts(meta.get("labels") or {}, node.get("spec") or {}, node.get("status") or {}),
        )
    STATE.pools.derive()
    # Watch only what the operator reads: GPU nodes, and Ridgeline's own RayServices and
    # RayClusters (filtered by the API server, not after the fact).
    settings.watching.label_selectors["", "v1", "nodes"] = GPU_PRODUCT
    settings.watching.label_selectors["ray.io", "v1", "rayservices"] = OWNED_SELECTOR
    settings.watching.label_selectors["ray.io", "v1", "rayclusters"] = OWNED_SELECTOR
    # Progress in annotations: kopf's default also writes status.kopf, which the CRD's
    # structural schema would prune.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="ridgeline.dev")
    settings.persistence.diffbase_storage = ModelsOnlyDiffBase(
        prefix="ridgeline.dev", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our Events are the condition transitions
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60]
    settings.watching.server_timeout = 300
    logger.info(
        "ridgeline operator: %d images, %d node pools (%d declared), resync every %.0f s",
        len(STATE.config.images),
        len(STATE.pools.pools),
        len(STATE.config.node_pools),
        RESYNC_S,
    )


# ---- nodes -> pools -> the models planned on the pools that changed ---------------------------

_settling: set[asyncio.Task[None]] = set()


@kopf.on.event("", "v1", "nodes", labels={GPU_PRODUCT: kopf.PRESENT})
async def node_changed(
    *,
    type: str | None,
    name: str,
    labels: kopf.Labels,
    spec: kopf.Spec,
    status: kopf.Status,
    **_: Any,
) -> None:
    facts = None if type == "DELETED" else node_facts(labels, spec, status)
    if STATE.pools.node(name, facts) and not _settling:
        task = asyncio.create_task(_derive_pools())
        _settling.add(task)
        task.add_done_callback(_settling.discard)


async def _derive_pools() -> None:
    await asyncio.sleep(POOLS_SETTLE_S)
    changed = STATE.pools.derive()
    metrics.POOL_DERIVATIONS.inc()
    woken = STATE.wakeups.wake_pools(changed)
    if changed:
        log.info("node pools changed: %s; %d models to re-plan", sorted(changed), woken)


# ---- RayServices and RayClusters: Ridgeline's only, mapped to their InferenceModel -------------


def _rayservice_view(meta: kopf.Meta, status: kopf.Status) -> RayServiceView:
    """What a reconcile reads of a RayService (the rest of it stays out of memory)."""
    return RayServiceView.from_object(
        {"metadata": {"annotations": dict(meta.annotations)}, "status": dict(status)}
    )


def _raycluster_view(status: kopf.Status) -> WorkerCounts:
    return WorkerCounts.from_status(status)


@kopf.index("ray.io", "v1", "rayservices", labels=OWNED)
def rayservice_index(
    *, namespace: str | None, name: str, meta: kopf.Meta, status: kopf.Status, **_: Any
) -> Any:
    return {(namespace, name): _rayservice_view(meta, status)}


@kopf.index("ray.io", "v1", "rayclusters", labels=OWNED)
def raycluster_index(*, namespace: str | None, name: str, status: kopf.Status, **_: Any) -> Any:
    return {(namespace, name): _raycluster_view(status)}


_seen: dict[tuple[str, str, str], Any] = {}


def _wake_owner(
    kind: Trigger,
    type_: str | None,
    namespace: str | None,
    name: str,
    labels: kopf.Labels,
    view: Any,
) -> None:
    """Wake the owning model when what it reads of this object changed. The initial listing
    wakes nobody: the resume handlers reconcile every model at start-up anyway."""
    namespace = namespace or ""
    seen_key = (str(kind), namespace, name)
    view = None if type_ == "DELETED" else view
    before = _seen.pop(seen_key, None) if view is None else _seen.get(seen_key)
    if view is not None:
        _seen[seen_key] = view
    owner = labels.get(MODEL_LABEL)
    if type_ is not None and owner and view != before:
        STATE.wakeups.wake((namespace, owner), kind)


@kopf.on.event("ray.io", "v1", "rayservices", labels=OWNED)
async def rayservice_changed(
    *,
    type: str | None,
    namespace: str | None,
    name: str,
    labels: kopf.Labels,
    meta: kopf.Meta,
    status: kopf.Status,
    **_: Any,
) -> None:
    view = _rayservice_view(meta, status)
    _wake_owner(Trigger.RAYSERVICE, type, namespace, name, labels, view)


@kopf.on.event("ray.io", "v1", "rayclusters", labels=OWNED)
async def raycluster_changed(
    *,
    type: str | None,
    namespace: str | None,
    name: str,
    labels: kopf.Labels,
    status: kopf.Status,
    **_: Any,
) -> None:
    _wake_owner(Trigger.RAYCLUSTER, type, namespace, name, labels, _raycluster_view(status))


# ---- InferenceModels ----------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def on_change(*, body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
    """The spec changed (or the operator restarted): kopf writes the status from ``patch``."""
    with STATE.exclusive((body["metadata"]["namespace"], body["metadata"]["name"])):
        decision = reconcile(body, kwargs, [Trigger.SPEC])  # kwargs: kopf's indexes by name
    new = status_change(body, decision)
    if new is not None:
        patch.setdefault("status", {}).update(new)
    post_events(body, decision)


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_backoff=2.0, cancellation_timeout=5.0)
async def follow(
    *,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    logger: Any,
    stopped: kopf.DaemonStopped,
    **kwargs: Any,
) -> None:
    """Sleeps until woken (RayService, RayCluster, pool) or its resync is due, then reconciles.
    A wake while the change handler has a newer spec in hand waits for its status to land."""
    key = (namespace or "", name)
    waker = STATE.wakeups.register(key)
    clock = asyncio.get_running_loop().time
    # The resync keeps its own schedule: a wake-up does not postpone it, or the models that
    # were all woken together (created together, say) would all resync together.
    resync_at = clock() + first_resync_s(RESYNC_S)
    stopping = asyncio.ensure_future(stopped.wait())  # the model is gone, or the operator exits
    try:
        while not stopped:
            triggers = await waker.wait(max(0.0, resync_at - clock()), stopping)
            if not triggers:
                break
            if clock() >= resync_at:
                resync_at = clock() + next_resync_s(RESYNC_S)
            # The snapshot is taken here, on the event loop, where kopf swaps the live body:
            # never half of one version and half of the next.
            snapshot = _snapshot(body)
            try:
                await asyncio.to_thread(_follow_once, body, snapshot, kwargs, key, triggers)
            except _SpecInFlightError:
                waker.waiting_for_status = True
                if _snapshot(body)["status"].get("observedGeneration") == body.meta.get(
                    "generation"
                ):
                    STATE.wakeups.wake_if_waiting(key)  # it landed while this pass looked
            except _StaleError:
                for trigger in triggers:
                    waker.wake(trigger)  # again, from the newer object
            except kopf.TemporaryError as exc:
                waker.wake(Trigger.RETRY)
                await asyncio.sleep(float(exc.delay or 1.0))
            except Exception:
                logger.exception("reconcile of %s/%s failed; retrying in %.0f s", *key, ERROR_S)
                waker.wake(Trigger.RETRY)
                await asyncio.sleep(ERROR_S)
    finally:
        stopping.cancel()
        STATE.wakeups.unregister(key, waker)


class _SpecInFlightError(Exception):
    """The status is behind the spec: the change handler owns this generation."""


class _StaleError(Exception):
    """The object changed between the snapshot and the pass: take a new snapshot."""


def _snapshot(body: kopf.Body) -> dict[str, Any]:
    return {
        "metadata": dict(body.get("metadata") or {}),
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }


def _follow_once(
    body: kopf.Body,
    snapshot: dict[str, Any],
    indexes: Any,
    key: tuple[str, str],
    triggers: Iterable[Trigger],
) -> None:
    meta = snapshot["metadata"]
    if snapshot["status"].get("observedGeneration") != meta.get("generation"):
        raise _SpecInFlightError()
    with STATE.exclusive(key):
        if body.meta.get("resourceVersion") != meta.get("resourceVersion"):
            raise _StaleError()  # e.g. a spec change whose handler ran while this one waited
        decision = reconcile(snapshot, indexes, triggers)
        new = status_change(snapshot, decision)
        if new is not None:
            kube.patch_status(
                STATE.api, GROUP, VERSION, PLURAL, key[0], key[1], meta["resourceVersion"], new
            )
    post_events(body, decision)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def model_seen(*, type: str, namespace: str | None, name: str, **_: Any) -> None:
    """A wake that waited for the change handler's status goes ahead once the model changed."""
    if type == "MODIFIED":
        STATE.wakeups.wake_if_waiting((namespace or "", name))


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def on_delete(*, namespace: str | None, name: str, **_: Any) -> None:
    """Children go with their owner reference (garbage collection); only memory to free."""
    metrics.forget(namespace or "", name)
    STATE.forget((namespace or "", name))
