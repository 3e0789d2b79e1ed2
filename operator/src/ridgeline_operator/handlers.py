"""kopf registration: thin handlers around one reconcile pipeline
(shape -> pools -> plan -> compatibility -> render -> apply -> status)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from pathlib import Path
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
from ridgeline.conditions import set_condition, transitions
from ridgeline.controller import Observed, decide
from ridgeline.discovery import discover_pools, merge_pools
from ridgeline.platform_config import PlatformConfig, default_config, load_platform_config
from ridgeline_operator import children, kube, metrics
from ridgeline_operator.credentials import read_credentials
from ridgeline_operator.shapes import ShapeCache

CONFIG_ENV = "RIDGELINE_CONFIG"
RESYNC_S = float(os.environ.get("RIDGELINE_RESYNC_SECONDS", "10"))


def _credentials(namespace: str, name: str) -> dict[str, str]:
    return read_credentials(STATE.api, namespace, name)


class _State:
    config: PlatformConfig = default_config()
    shapes = ShapeCache(credentials=_credentials)
    api: Any = None


STATE = _State()


@kopf.on.startup()
def configure(*, settings: kopf.OperatorSettings, logger: Any, **_: Any) -> None:
    path = os.environ.get(CONFIG_ENV)
    if path:
        STATE.config = load_platform_config(Path(path))
    STATE.api = kube.load_client()
    # Progress in annotations: kopf's default also writes status.kopf, which the CRD's
    # structural schema would prune.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="ridgeline.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="ridgeline.dev", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our Events are the condition transitions
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60]
    settings.watching.server_timeout = 300
    logger.info(
        "ridgeline operator: %d images, %d declared pools",
        len(STATE.config.images),
        len(STATE.config.node_pools),
    )


@kopf.index("", "v1", "nodes")
def node_index(*, labels: kopf.Labels, status: kopf.Status, spec: kopf.Spec, **_: Any) -> Any:
    schedulable = not spec.get("unschedulable", False)
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return {None: (dict(labels), dict(status.get("allocatable") or {}), schedulable and ready)}


@kopf.index("ray.io", "v1", "rayservices")
def rayservice_index(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    return {(namespace, name): dict(body)}


@kopf.index("ray.io", "v1", "rayclusters")
def raycluster_index(*, namespace: str | None, name: str, status: kopf.Status, **_: Any) -> Any:
    return {(namespace, name): dict(status)}


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_of(body: kopf.Body) -> InferenceModelStatus | None:
    raw = dict(body.get("status") or {})
    if not raw:
        return None
    try:
        return InferenceModelStatus.model_validate(raw)
    except ValidationError:
        return None  # written by something else: recomputed from scratch


def reconcile(body: kopf.Body, patch: kopf.Patch, indexes: dict[str, Any]) -> str:
    """One pass: observe (from kopf's indexes), decide (pure), apply, write status."""
    node_index: kopf.Index[Any, Any] = indexes["node_index"]
    rayservice_index: kopf.Index[Any, Any] = indexes["rayservice_index"]
    raycluster_index: kopf.Index[Any, Any] = indexes["raycluster_index"]
    started = time.monotonic()
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    model = InferenceModel.model_validate(
        {
            "metadata": {"name": name, "namespace": ns},
            "spec": dict(body["spec"]),
            "status": _status_of(body),
        }
    )
    pools = merge_pools(discover_pools(list(node_index.get(None, []))), STATE.config.node_pools)
    source = model.spec.model
    shape, shape_error = STATE.shapes.get(source.uri, ns, source.credentials_secret)
    running: dict[str, Any] | None = next(iter(rayservice_index.get((ns, name), [])), None)
    clusters: dict[str, dict[str, Any]] = {}
    for side in ("activeServiceStatus", "pendingServiceStatus"):
        rs_status: dict[str, Any] = (running or {}).get("status") or {}
        cname = (rs_status.get(side) or {}).get("rayClusterName")
        if cname and (ns, cname) in raycluster_index:
            clusters[cname] = next(iter(raycluster_index[(ns, cname)]), {})
    obs = Observed(
        model=model,
        generation=int(meta.get("generation") or 0),
        uid=meta["uid"],
        pools=pools,
        shape=shape,
        shape_error=shape_error,
        rayservice=running,
        rayclusters=clusters,
    )
    decision = decide(obs, STATE.config, _now())
    refused: kopf.PermanentError | None = None
    if decision.apply is not None:
        try:
            children.before_apply(STATE.api, decision)
            kube.apply_rayservice(STATE.api, decision.apply)
            children.after_apply(STATE.api, decision, ns)
        except kopf.PermanentError as exc:
            # Say so in status (and keep observedGeneration current, so resyncs retry it).
            refused = exc
            decision.status.conditions = set_condition(
                decision.status.conditions,
                "Applied",
                "False",
                "ApplyRefused",
                str(exc)[:1000],
                decision.status.observed_generation,
                _now(),
            )
            decision.events = transitions(
                (model.status.conditions if model.status else []), decision.status.conditions
            )
    new = decision.status.to_api()
    if new != dict(body.get("status") or {}):  # patch only on change
        patch.setdefault("status", {}).update(new)
    for event in decision.events:
        kind = "Normal" if event.new.status == "True" else "Warning"
        kopf.event(
            body,
            type=kind,
            reason=event.new.reason,
            message=f"{event.type}={event.new.status}: {event.new.message[:900]}",
        )
    metrics.observe(ns, name, decision.status)
    result = "refused" if refused is not None else _result(decision)
    metrics.RECONCILES.labels(result).inc()
    metrics.DURATION.observe(time.monotonic() - started)
    return result


def _result(decision: Any) -> str:
    conds = {c.type: c for c in decision.status.conditions}
    for ctype, result in (("Planned", "infeasible"), ("Compatible", "incompatible")):
        cond = conds.get(ctype)
        if cond is not None and cond.status == "False":
            return "unreadable" if cond.reason == "ModelUnreadable" else result
    return "applied" if decision.apply is not None else "unchanged"


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def on_change(*, body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
    _reconcile_counting_retries(body, patch, kwargs)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_S, initial_delay=RESYNC_S)
def resync(*, body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
    """Readiness, replicas and node pools change without the InferenceModel changing."""
    status = body.get("status") or {}
    if status.get("observedGeneration") != body["metadata"].get("generation"):
        return  # a spec change the change handler has not finished: it owns this generation
    _reconcile_counting_retries(body, patch, kwargs)


def _reconcile_counting_retries(body: kopf.Body, patch: kopf.Patch, kwargs: dict[str, Any]) -> None:
    try:
        reconcile(body, patch, kwargs)
    except kopf.TemporaryError:
        metrics.RECONCILES.labels("retry").inc()
        raise


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def on_delete(*, namespace: str | None, name: str, **_: Any) -> None:
    """Children go with their owner reference (garbage collection); only metrics to forget."""
    metrics.forget(namespace or "", name)
