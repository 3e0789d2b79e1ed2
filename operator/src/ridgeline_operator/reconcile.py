"""One reconcile pass around the pure decision: observe (kopf's indexes, the pool cache, the
shape cache), decide, apply what changed, and write the status the decision holds. Each model's
daemon (handlers.py) runs it, one pass at a time: the status has that one writer."""

from __future__ import annotations

import datetime as dt
import enum
import time
from collections.abc import Iterable, Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from ridgeline.api.inference_model import (
    GROUP,
    PLURAL,
    VERSION,
    InferenceModel,
    InferenceModelStatus,
)
from ridgeline.conditions import ConditionType, is_true
from ridgeline.controller import Decision, Observed, decide
from ridgeline.platform_config import PlatformConfig, default_config
from ridgeline.rayservice_view import RayServiceView, WorkerCounts
from ridgeline_operator import children, kube, metrics, node_cache
from ridgeline_operator.credentials import read_credentials
from ridgeline_operator.node_pools import PoolCache
from ridgeline_operator.shapes import ShapeCache
from ridgeline_operator.wakeups import Key, Trigger, Wakeups


class State:
    """What the operator keeps in memory between passes."""

    def __init__(self) -> None:
        self.config: PlatformConfig = default_config()
        # A model's storage credentials are read from its namespace when its shape is read.
        self.shapes = ShapeCache(credentials=self._credentials)
        self.api: Any = None
        self.pools = PoolCache()
        self.wakeups = Wakeups()

    def _credentials(self, namespace: str, name: str) -> dict[str, str]:
        return read_credentials(self.api, namespace, name)

    def forget(self, key: Key) -> None:
        self.wakeups.forget(key)


STATE = State()


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_of(body: Mapping[str, Any]) -> InferenceModelStatus | None:
    raw = dict(body.get("status") or {})
    if not raw:
        return None
    try:
        return InferenceModelStatus.model_validate(raw)
    except ValidationError:
        return None  # written by something else: recomputed from scratch


def observe(body: Mapping[str, Any], indexes: Mapping[str, Any]) -> Observed:
    """What the decision needs, all from memory: kopf's indexes and the operator's caches."""
    rayservices: Mapping[Any, Any] = indexes["rayservice_index"]
    rayclusters: Mapping[Any, Any] = indexes["raycluster_index"]
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    model = InferenceModel.model_validate(
        {
            # the uid names the node cache's volumes (render.node_cache.model_uid)
            "metadata": {"name": name, "namespace": ns, "uid": meta["uid"]},
            "spec": dict(body["spec"]),
            "status": _status_of(body),
        }
    )
    source = model.spec.model
    shape, shape_error = STATE.shapes.get(source.uri, ns, source.credentials_secret)
    running: RayServiceView | None = next(iter(rayservices.get((ns, name), [])), None)
    clusters = {
        cname: next(iter(rayclusters[(ns, cname)]), WorkerCounts())
        for cname in (running.cluster_names if running is not None else [])
        if (ns, cname) in rayclusters
    }
    return Observed(
        model=model,
        generation=int(meta.get("generation") or 0),
        uid=meta["uid"],
        pools=STATE.pools.pools,
        shape=shape,
        shape_error=shape_error,
        rayservice=running,
        rayclusters=clusters,
        node_reports=node_cache.REPORTS.snapshot(STATE.api, STATE.config),
    )


def reconcile(
    body: Mapping[str, Any],
    indexes: Mapping[str, Any],
    triggers: Iterable[Trigger],
    applied: Mapping[str, Any] | None = None,
) -> Decision:
    """Observe, decide, apply. An apply the API server refuses is the decision's own refused
    outcome; transient API errors raise kopf.TemporaryError for the caller to retry. A RayService
    equal to ``applied`` (what the pass before applied, when its status met a 409) is not
    applied again."""
    started = time.monotonic()
    for trigger in triggers:
        metrics.TRIGGERS.labels(trigger).inc()
    obs = observe(body, indexes)
    decision = decide(obs, STATE.config, now())
    try:
        # On every pass they are rendered for, not only with an apply: the pods name the claim,
        # and one deleted since (by an admin, say) is made again.
        node_cache.create_volumes(STATE.api, decision.node_volumes)
        if decision.apply is not None and decision.apply != applied:
            children.before_apply(STATE.api, decision)  # token Secret, NetworkPolicy
            kube.apply_rayservice(STATE.api, decision.apply)
            children.after_apply(STATE.api, decision, obs.model.metadata.namespace or "")
    except kopf.PermanentError as exc:
        decision = decision.refused(str(exc))
    except kopf.TemporaryError:
        metrics.RECONCILES.labels("retry").inc()
        raise
    key = (obs.model.metadata.namespace or "", obs.model.metadata.name)
    status = decision.status
    planned = is_true(status.conditions, ConditionType.PLANNED) and status.plan is not None
    STATE.wakeups.planned_on(key, status.plan.pool if planned and status.plan else None)
    metrics.observe(key[0], key[1], status)
    metrics.RECONCILES.labels(decision.result).inc()
    metrics.DURATION.observe(time.monotonic() - started)
    return decision


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """``new`` as a JSON merge patch (RFC 7386) onto ``old``: a key the patch leaves out is
    kept by the server, so each key of ``old`` that ``new`` dropped is sent as null, within
    objects too (a list is replaced whole)."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        was = old.get(key)
        if isinstance(value, Mapping) and isinstance(was, Mapping):
            patch[key] = merge_patch(was, value)
        else:
            patch[key] = value
    return patch


def status_change(body: Mapping[str, Any], decision: Decision) -> dict[str, Any] | None:
    """The merge patch that makes the status the decision's, or None when it is what the
    object already says."""
    new = decision.status.to_api()
    old = dict(body.get("status") or {})
    return None if new == old else merge_patch(old, new)


class Written(enum.Enum):
    NOTHING = "nothing"  # the object already says it (or the server found nothing to change)
    LANDED = "landed"
    CONFLICT = "conflict"  # the object changed since the snapshot (409): the decision may be stale


def write_status(body: Mapping[str, Any], decision: Decision) -> Written:
    """Write the decision's status if it changed, only onto the object ``body`` is a snapshot
    of."""
    new = status_change(body, decision)
    if new is None:
        return Written.NOTHING
    meta = body["metadata"]
    try:
        version = kube.patch_status(
            STATE.api,
            GROUP,
            VERSION,
            PLURAL,
            meta["namespace"],
            meta["name"],
            meta["resourceVersion"],
            new,
        )
    except kube.ConflictError:
        return Written.CONFLICT
    # No new version: the daemon must not wait for one (daemon.py's outdated version).
    return Written.NOTHING if version == meta["resourceVersion"] else Written.LANDED


def post_events(body: kopf.Body, decision: Decision) -> None:
    """One Event per condition transition, once its status is written."""
    for event in decision.events:
        kopf.event(
            body,
            type="Normal" if event.new.status == "True" else "Warning",
            reason=event.new.reason,
            message=f"{event.type}={event.new.status}: {event.new.message[:900]}",
        )
