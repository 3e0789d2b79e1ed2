"""kopf registration: thin handlers around each InferenceModel's daemon (daemon.py), which runs
its reconcile passes (reconcile.py) and is the one writer of its status.

What wakes a daemon (in memory): a change of the model's spec (kopf's create/update/resume
handlers), of its RayService or RayClusters, or of the node pool it is planned on; and a slow
resync, spread at random. It also runs a pass when it starts."""

from __future__ import annotations

import asyncio
import logging
import os
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
    daemon,
    kube,
    metrics,
)
from ridgeline_operator.node_pools import node_facts
from ridgeline_operator.reconcile import STATE
from ridgeline_operator.wakeups import Trigger

CONFIG_ENV = "RIDGELINE_CONFIG"
# Node events come in bursts (a node pool scaling up): pools are derived once the burst passed.
POOLS_SETTLE_S = 0.5
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
    settings.persistence.diffbase_storage = daemon.DIFFBASE
    settings.posting.level = logging.WARNING  # our Events are the condition transitions
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60]
    settings.watching.server_timeout = 300
    logger.info(
        "ridgeline operator: %d images, %d node pools (%d declared), resync every %.0f s",
        len(STATE.config.images),
        len(STATE.pools.pools),
        len(STATE.config.node_pools),
        daemon.RESYNC_S,
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
async def on_change(*, body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
    """The spec changed (or the operator restarted): wake the model's daemon, which writes the
    status. Returning is all kopf needs: it then records the spec as handled (daemon.DIFFBASE)."""
    STATE.wakeups.wake_spec((namespace or "", name), body.meta.get("resourceVersion"))


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
    """The model's one writer of status (daemon.py); kwargs: kopf's indexes by name."""
    await daemon.run(body, (namespace or "", name), stopped, kwargs, logger)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def on_delete(*, namespace: str | None, name: str, **_: Any) -> None:
    """Children go with their owner reference (garbage collection); only memory to free."""
    metrics.forget(namespace or "", name)
    STATE.forget((namespace or "", name))
