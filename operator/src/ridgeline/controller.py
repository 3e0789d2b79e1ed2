"""The reconcile decision, pure: from what the operator observed (the InferenceModel, the node
pools, the model's shape, the RayService now running) to the status to write, the RayService
to apply (if any) and the Events to post, and what all of that becomes if the API server
refuses the apply. The operator package does the I/O around it. Over 300 lines: one decision,
read top to bottom (plan, check, render, status)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

from ridgeline import cold_start
from ridgeline.api.inference_model import (
    Condition,
    InferenceModel,
    InferenceModelStatus,
    Placement,
    ReplicaStatus,
)
from ridgeline.api.node_cache import NodeCacheReport, WeightsStatus
from ridgeline.api.plan import Plan
from ridgeline.compat import IncompatibleError, choose_image
from ridgeline.conditions import (
    ConditionType,
    Reason,
    Status,
    Transition,
    drop_condition,
    is_true,
    set_condition,
    transitions,
)
from ridgeline.node_cache_status import cached_condition, model_weights
from ridgeline.planner import InfeasiblePlanError, NodePool, plan_model
from ridgeline.planner.report import options_table
from ridgeline.platform_config import PlatformConfig
from ridgeline.pool_checks import cache_fit_error, nodes_condition
from ridgeline.rayservice_view import RayServiceView, WorkerCounts
from ridgeline.render import node_cache
from ridgeline.render.pods import cache_bytes_estimate
from ridgeline.render.rayservice import (
    CLUSTER_HASH,
    SPEC_HASH,
    build_rayservice,
    serve_endpoint,
)
from ridgeline.render.security import build_network_policy, build_ray_token_secret
from ridgeline.shape import ModelShape

MESSAGE_LIMIT = 1000


class Result(enum.StrEnum):
    """What a reconcile came to (the operator's reconcile metric counts these)."""

    APPLIED = "applied"
    UNCHANGED = "unchanged"
    INFEASIBLE = "infeasible"
    INCOMPATIBLE = "incompatible"
    UNREADABLE = "unreadable"
    REFUSED = "refused"


@dataclass(frozen=True)
class Observed:
    model: InferenceModel
    generation: int
    uid: str
    pools: list[NodePool]
    shape: ModelShape | None
    shape_error: str | None
    rayservice: RayServiceView | None
    # The RayClusters' own worker counts, for the clusters the RayService names
    rayclusters: dict[str, WorkerCounts] = field(default_factory=dict)
    # The node cache agents' reports, one per node (none where the node cache is disabled)
    node_reports: tuple[NodeCacheReport, ...] = ()


@dataclass(frozen=True)
class Decision:
    """The whole outcome of one pass. ``status`` and ``events`` hold if ``apply`` is None or the
    API server takes it; ``refused(error)`` is the outcome when it does not."""

    status: InferenceModelStatus
    result: Result
    apply: dict[str, Any] | None = None
    events: list[Transition] = field(default_factory=list)
    # With `apply`: the Ray token Secret to create if missing (without its data), the objects
    # to apply beside the RayService (NetworkPolicy), and the RayClusters to delete after it
    # (upgradeStrategy Recreate: KubeRay then builds one cluster from the new spec), and the
    # node cache's PersistentVolume and claim to create if missing (node_cache enabled).
    token_secret: dict[str, Any] | None = None
    owned: list[dict[str, Any]] = field(default_factory=list)
    replace_clusters: list[str] = field(default_factory=list)
    node_volumes: list[dict[str, Any]] = field(default_factory=list)
    # for refused(): the conditions before this pass, and whether a RayService already runs
    previous: list[Condition] = field(default_factory=list)
    running: bool = False
    now: str = ""

    def refused(self, error: str) -> Decision:
        """Applied=False (ApplyRefused) with the API server's answer; observedGeneration stays
        current, so the next resync tries again instead of waiting for a spec change."""
        conds = set_condition(
            self.status.conditions,
            ConditionType.APPLIED,
            "False",
            Reason.APPLY_REFUSED,
            error[:MESSAGE_LIMIT],
            self.status.observed_generation,
            self.now,
        )
        status = self.status.model_copy(update={"conditions": conds})
        if not self.running:
            status.endpoint = None  # nothing serves there
        return replace(
            self,
            status=status,
            result=Result.REFUSED,
            apply=None,
            events=transitions(self.previous, conds),
            token_secret=None,
            owned=[],
            replace_clusters=[],
            node_volumes=[],
        )


def _plan_still_holds(plan: Plan, pools: list[NodePool]) -> bool:
    """A running plan is kept while its pool exists with enough GPUs per node: a marginally
    better plan elsewhere never churns a running service."""
    pool = next((p for p in pools if p.name == plan.pool), None)
    if pool is None:
        return False
    same_gpu = pool.gpu_product.lower() == plan.gpu_product.lower()
    return same_gpu and (pool.is_cpu or pool.gpus_per_node >= plan.gpus_per_replica)


def _ready(
    rs: RayServiceView | None, clusters: dict[str, WorkerCounts]
) -> tuple[Status, Reason, str, ReplicaStatus | None]:
    if rs is None:
        return "False", Reason.RAYSERVICE_MISSING, "no RayService yet", None
    workers = WorkerCounts()
    if rs.clusters:
        first = rs.clusters[0]
        # The RayCluster's own status is current; the copy in the RayService may lag.
        own = clusters.get(first.name)
        workers = own if own is not None and own.reported else first.workers
    replicas = ReplicaStatus(desired=workers.desired, ready=workers.ready)
    ready = rs.ready
    if ready is None:
        return "False", Reason.RAYSERVICE_STARTING, "waiting for KubeRay to report", replicas
    said = ": ".join(p for p in (ready.reason, ready.message) if p)
    message = f"KubeRay: {said}" if said else ""
    if ready.status == "True":
        return "True", Reason.READY, message, replicas
    return "False", Reason.NOT_READY, message, replicas


@dataclass(frozen=True)
class _Children:
    token_secret: dict[str, Any] | None = None
    owned: list[dict[str, Any]] = field(default_factory=list)
    replace_clusters: list[str] = field(default_factory=list)
    node_volumes: list[dict[str, Any]] = field(default_factory=list)


def _children(
    obs: Observed, config: PlatformConfig, manifest: dict[str, Any], cache_bytes: int
) -> _Children:
    model = obs.model
    token_secret = build_ray_token_secret(model, obs.uid) if config.ray_token_auth else None
    policy = build_network_policy(model, config, obs.uid)
    owned = [policy] if policy is not None else []
    replace_clusters: list[str] = []
    new_cluster = manifest["metadata"]["annotations"][CLUSTER_HASH]
    if (
        config.upgrade_strategy == "Recreate"
        and obs.rayservice is not None
        and obs.rayservice.cluster_hash != new_cluster
    ):
        replace_clusters = obs.rayservice.cluster_names
    volumes = node_cache.build_volumes(model, config, cache_bytes, obs.uid)
    return _Children(token_secret, owned, replace_clusters, volumes)


def decide(obs: Observed, config: PlatformConfig, now: str) -> Decision:
    model, gen = obs.model, obs.generation
    old = model.status or InferenceModelStatus()
    conds = list(old.conditions)
    status = old.model_copy(deep=True)
    status.observed_generation = gen
    running = obs.rayservice is not None
    left_alone = " The running service is left as it was." if running else ""
    weights: WeightsStatus | None = None  # set once planned, with the node cache enabled

    def finish(
        result: Result, apply: dict[str, Any] | None = None, children: _Children | None = None
    ) -> Decision:
        kids = children or _Children()
        ready, reason, message, replicas = _ready(obs.rayservice, obs.rayclusters)
        status.weights = weights
        cached = (
            drop_condition(conds, ConditionType.CACHED)
            if weights is None
            else set_condition(
                conds,
                ConditionType.CACHED,
                *cached_condition(weights, obs.node_reports),
                gen,
                now,
            )
        )
        status.conditions = set_condition(
            cached, ConditionType.READY, ready, reason, message, gen, now
        )
        if replicas is not None:
            status.replicas = replicas
        if running or apply is not None:
            status.endpoint = serve_endpoint(model, config)
        return Decision(
            status=status,
            result=result,
            apply=apply,
            events=transitions(old.conditions, status.conditions),
            token_secret=kids.token_secret,
            owned=kids.owned,
            replace_clusters=kids.replace_clusters,
            node_volumes=kids.node_volumes,
            previous=list(old.conditions),
            running=running,
            now=now,
        )

    # 1. plan (kept while it holds for an unchanged spec)
    plan = old.plan
    keep = (
        plan is not None
        and is_true(old.conditions, ConditionType.PLANNED)
        and old.observed_generation == gen
        and _plan_still_holds(plan, obs.pools)
    )
    if not keep:
        if obs.shape is None:
            conds = set_condition(
                conds,
                ConditionType.PLANNED,
                "False",
                Reason.MODEL_UNREADABLE,
                obs.shape_error or "model shape unknown",
                gen,
                now,
            )
            return finish(Result.UNREADABLE)
        try:
            plan = plan_model(obs.shape, model.spec, obs.pools)
        except InfeasiblePlanError as exc:
            table = f"\n{options_table(exc.options)}" if exc.options else ""
            conds = set_condition(
                conds,
                ConditionType.PLANNED,
                "False",
                Reason.INFEASIBLE,
                f"{exc}.{left_alone}{table}",
                gen,
                now,
            )
            return finish(Result.INFEASIBLE)
    assert plan is not None
    pool = next(p for p in obs.pools if p.name == plan.pool)
    size = obs.shape.checkpoint_bytes if obs.shape else None
    weights = model_weights(model, size, config, pool, old.weights, obs.node_reports)
    agree = nodes_condition(pool)
    if agree is None:
        conds = drop_condition(conds, ConditionType.NODES_MATCH_POOL)
    else:
        conds = set_condition(conds, ConditionType.NODES_MATCH_POOL, *agree, gen, now)
    conds = set_condition(
        conds,
        ConditionType.PLANNED,
        "True",
        # The same reason and message whether the plan was kept or made anew: a resync that
        # keeps the plan changes nothing in the status.
        Reason.batch_target(plan.bound),
        f"{plan.gpus_per_replica} x {plan.gpu_product} on pool {plan.pool}, batch "
        f"{plan.batch_target} ({plan.bound.value}-bound), "
        f"{plan.predicted.tokens_per_second:.0f} tokens/s predicted",
        gen,
        now,
    )

    # 2. compatibility
    try:
        placement: Placement = choose_image(config, pool, model.spec.quantization)
    except IncompatibleError as exc:
        conds = set_condition(
            conds,
            ConditionType.COMPATIBLE,
            "False",
            Reason.NO_COMPATIBLE_IMAGE,
            f"{exc}.{left_alone}",
            gen,
            now,
        )
        return finish(Result.INCOMPATIBLE)
    checkpoint = obs.shape.checkpoint_bytes if obs.shape else None
    cache_bytes = checkpoint or cache_bytes_estimate(plan)
    too_small = cache_fit_error(config, pool, cache_bytes)
    if too_small is not None:
        conds = set_condition(
            conds,
            ConditionType.COMPATIBLE,
            "False",
            Reason.CACHE_DOES_NOT_FIT,
            f"{too_small}.{left_alone}",
            gen,
            now,
        )
        return finish(Result.INCOMPATIBLE)
    if checkpoint is not None or plan.cold_start is None:
        cold = cold_start.predict(
            cache_bytes,
            gpu=not pool.is_cpu,
            node_cache=node_cache.uses_node_cache(obs.model, config),
            image_on_node=placement.image == config.node_cache.image,
        )
        plan = plan.model_copy(update={"cold_start": cold})
    conds = set_condition(
        conds,
        ConditionType.COMPATIBLE,
        "True",
        Reason.IMAGE_SELECTED,
        f"{placement.image} (CUDA {placement.cuda_version or 'none'}) for "
        f"driver {pool.driver_version or 'n/a'}",
        gen,
        now,
    )
    status.plan = plan
    status.placement = placement

    # 3. render; apply only what changed
    manifest = build_rayservice(
        model,
        plan,
        placement,
        config,
        uid=obs.uid,
        pool=pool,
        checkpoint_bytes=checkpoint,
    )
    wanted = manifest["metadata"]["annotations"][SPEC_HASH]
    conds = set_condition(
        conds,
        ConditionType.APPLIED,
        "True",
        Reason.APPLIED,
        f"RayService {model.metadata.name} at spec hash {wanted}",
        gen,
        now,
    )
    # Without the shape (a kept plan, storage unreachable) the cache size would be a guess:
    # leave a running service as it is rather than restart it for that.
    current = obs.rayservice.spec_hash if obs.rayservice is not None else None
    if current != wanted and (obs.shape is not None or not running):
        return finish(Result.APPLIED, manifest, _children(obs, config, manifest, cache_bytes))
    # The volumes on every pass, not only with an apply: a claim deleted since (the model made
    # again under its name, an admin) is made again, or the pods stay Pending.
    volumes = node_cache.build_volumes(model, config, cache_bytes, obs.uid)
    return finish(Result.UNCHANGED, children=_Children(node_volumes=volumes))
