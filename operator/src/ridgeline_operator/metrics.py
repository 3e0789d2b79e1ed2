"""Operator metrics (prometheus_client, one prefix)."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

from ridgeline.api.inference_model import InferenceModelStatus

P = "ridgeline_operator_"
RECONCILES = Counter(f"{P}reconciles", "Reconciles by result.", ["result"])
DURATION = Histogram(
    f"{P}reconcile_duration_seconds",
    "Time per reconcile.",
    buckets=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
)
TRIGGERS = Counter(
    f"{P}reconcile_triggers",
    "Reconciles by what woke them (spec, rayservice, raycluster, pools, node_cache, resync, "
    "retry).",
    ["trigger"],
)
POOL_DERIVATIONS = Counter(
    f"{P}pool_derivations", "Times the node pools were derived again after nodes changed."
)
MODELS = Gauge(f"{P}models", "InferenceModels by condition and status.", ["condition", "status"])
GPUS = Gauge(f"{P}planned_gpus_per_replica", "Planned GPUs per replica.", ["namespace", "model"])
REPLICAS = Gauge(
    f"{P}replicas", "Replicas by kind (desired, ready).", ["namespace", "model", "kind"]
)
TOKENS = Gauge(
    f"{P}predicted_tokens_per_second", "Planned tokens/s per replica.", ["namespace", "model"]
)
STEP = Gauge(
    f"{P}predicted_step_seconds",
    "Planned decode step time at the batch target (the engine's step, as the plan predicts it).",
    ["namespace", "model"],
)
PRICE = Gauge(
    f"{P}replica_hour_price",
    "Price of one replica-hour as the plan counts it (its share of the pool's pricePerNodeHour, "
    "in the platform's currency); absent where the pool has no price.",
    ["namespace", "model"],
)

_conditions: dict[tuple[str, str], dict[str, str]] = {}


def observe(namespace: str, name: str, status: InferenceModelStatus) -> None:
    _count((namespace, name), {c.type: c.status for c in status.conditions})
    if status.plan is not None:
        GPUS.labels(namespace, name).set(status.plan.gpus_per_replica)
        TOKENS.labels(namespace, name).set(status.plan.predicted.tokens_per_second)
        STEP.labels(namespace, name).set(status.plan.predicted.step_seconds)
        price = status.plan.predicted.price_per_replica_hour
        if price is None:
            # a plan on an unpriced pool: no price, rather than the last one
            with contextlib.suppress(KeyError):
                PRICE.remove(namespace, name)
        else:
            PRICE.labels(namespace, name).set(price)
    if status.replicas is not None:
        REPLICAS.labels(namespace, name, "desired").set(status.replicas.desired)
        REPLICAS.labels(namespace, name, "ready").set(status.replicas.ready)


def forget(namespace: str, name: str) -> None:
    _count((namespace, name), None)
    for gauge in (GPUS, TOKENS, STEP, PRICE):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)
    for kind in ("desired", "ready"):
        with contextlib.suppress(KeyError):
            REPLICAS.remove(namespace, name, kind)


def _count(key: tuple[str, str], conds: dict[str, str] | None) -> None:
    """Move one model's conditions between the per-condition counts (constant work per call:
    a reconcile must not cost more with more models)."""
    old = _conditions.pop(key, {}) if conds is None else _conditions.get(key, {})
    if conds is not None:
        _conditions[key] = conds
    for ctype, cstatus in old.items():
        if (conds or {}).get(ctype) != cstatus:
            MODELS.labels(ctype, cstatus).dec()
    for ctype, cstatus in (conds or {}).items():
        if old.get(ctype) != cstatus:
            MODELS.labels(ctype, cstatus).inc()
