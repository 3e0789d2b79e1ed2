"""The reconcile decision, pure: from what the operator observed (the InferenceModel, the node
pools, the model's shape, the RayService now running) to the status to write, the RayService
to apply (if any) and the Events to post. The operator package does the I/O around it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ridgeline.api.inference_model import (
    InferenceModel,
    InferenceModelStatus,
    Placement,
    ReplicaStatus,
)
from ridgeline.api.plan import Plan
from ridgeline.compat import IncompatibleError, choose_image
from ridgeline.conditions import Transition, set_condition, transitions
from ridgeline.planner import InfeasiblePlanError, NodePool, plan_model
from ridgeline.planner.report import options_table
from ridgeline.platform_config import PlatformConfig
from ridgeline.render.rayservice import (
    CLUSTER_HASH,
    SPEC_HASH,
    build_rayservice,
    serve_endpoint,
)
from ridgeline.render.security import build_network_policy, build_ray_token_secret
from ridgeline.shape import ModelShape


@dataclass(frozen=True)
class Observed:
    model: InferenceModel
    generation: int
    uid: str
    pools: list[NodePool]
    shape: ModelShape | None
    shape_error: str | None
    rayservice: dict[str, Any] | None
    # RayCluster status by name, for the clusters the RayService names (pending or active)
    rayclusters: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Decision:
    status: InferenceModelStatus
    apply: dict[str, Any] | None = None
    events: list[Transition] = field(default_factory=list)
    # With `apply`: the Ray token Secret to create if missing (without its data), the objects
    # to apply beside the RayService (NetworkPolicy), and the RayClusters to delete after it
    # (upgradeStrategy Recreate: KubeRay then builds one cluster from the new spec).
    token_secret: dict[str, Any] | None = None
    owned: list[dict[str, Any]] = field(default_factory=list)
    replace_clusters: list[str] = field(default_factory=list)


def _plan_still_holds(plan: Plan, pools: list[NodePool]) -> bool:
    """A running plan is kept while its pool exists with enough GPUs per node: a marginally
    better plan elsewhere never churns a running service."""
    pool = next((p for p in pools if p.name == plan.pool), None)
    if pool is None:
        return False
    same_gpu = pool.gpu_product.lower() == plan.gpu_product.lower()
    return same_gpu and (pool.is_cpu or pool.gpus_per_node >= plan.gpus_per_replica)


def _ready(
    rs: dict[str, Any] | None, clusters: dict[str, dict[str, Any]]
) -> tuple[str, str, str, ReplicaStatus | None]:
    if rs is None:
        return "False", "RayServiceMissing", "no RayService yet", None
    status = rs.get("status") or {}
    cluster: dict[str, Any] = {}
    for key in ("activeServiceStatus", "pendingServiceStatus"):
        side = status.get(key) or {}
        name = side.get("rayClusterName")
        if name:
            # The RayCluster's own status is current; the copy in the RayService may lag.
            cluster = clusters.get(name) or side.get("rayClusterStatus") or {}
            break
    replicas = ReplicaStatus(
        desired=int(cluster.get("desiredWorkerReplicas") or 0),
        ready=int(cluster.get("readyWorkerReplicas") or 0),
    )
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is None:
        return "False", "RayServiceStarting", "waiting for KubeRay to report", replicas
    state = "True" if ready.get("status") == "True" else "False"
    reason = ready.get("reason") or ("Ready" if state == "True" else "NotReady")
    return state, reason, ready.get("message") or "", replicas


def _children(
    decision: Decision,
    obs: Observed,
    config: PlatformConfig,
    manifest: dict[str, Any],
    current: dict[str, Any],
) -> None:
    model = obs.model
    if config.ray_token_auth:
        decision.token_secret = build_ray_token_secret(model, obs.uid)
    policy = build_network_policy(model, config, obs.uid)
    if policy is not None:
        decision.owned.append(policy)
    new_cluster = manifest["metadata"]["annotations"][CLUSTER_HASH]
    if (
        config.upgrade_strategy == "Recreate"
        and obs.rayservice is not None
        and current.get(CLUSTER_HASH) != new_cluster
    ):
        status = obs.rayservice.get("status") or {}
        for side in ("activeServiceStatus", "pendingServiceStatus"):
            name = (status.get(side) or {}).get("rayClusterName")
            if name:
                decision.replace_clusters.append(name)


def decide(obs: Observed, config: PlatformConfig, now: str) -> Decision:
    model, gen = obs.model, obs.generation
    old = model.status or InferenceModelStatus()
    conds = list(old.conditions)
    status = old.model_copy(deep=True)
    status.observed_generation = gen
    decision = Decision(status=status)

    def finish() -> Decision:
        ready, reason, message, replicas = _ready(obs.rayservice, obs.rayclusters)
        status.conditions = set_condition(conds, "Ready", ready, reason, message, gen, now)  # type: ignore[arg-type]
        if replicas is not None:
            status.replicas = replicas
        if obs.rayservice is not None or decision.apply is not None:
            status.endpoint = serve_endpoint(model, config)
        decision.events = transitions(old.conditions, status.conditions)
        return decision

    # 1. plan (kept while it holds for an unchanged spec)
    plan = old.plan
    planned_ok = any(c.type == "Planned" and c.status == "True" for c in old.conditions)
    keep = (
        plan is not None
        and planned_ok
        and old.observed_generation == gen
        and _plan_still_holds(plan, obs.pools)
    )
    if not keep:
        if obs.shape is None:
            conds = set_condition(
                conds,
                "Planned",
                "False",
                "ModelUnreadable",
                obs.shape_error or "model shape unknown",
                gen,
                now,
            )
            return finish()
        try:
            plan = plan_model(obs.shape, model.spec, obs.pools)
        except InfeasiblePlanError as exc:
            table = f"\n{options_table(exc.options)}" if exc.options else ""
            running = " The running service is left as it was." if obs.rayservice else ""
            conds = set_condition(
                conds, "Planned", "False", "Infeasible", f"{exc}.{running}{table}", gen, now
            )
            return finish()
    assert plan is not None
    pool = next(p for p in obs.pools if p.name == plan.pool)
    conds = set_condition(
        conds,
        "Planned",
        "True",
        # The same reason and message whether the plan was kept or made anew: a resync that
        # keeps the plan changes nothing in the status.
        f"BatchTarget{plan.bound.value.title()}",
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
        running = " The running service is left as it was." if obs.rayservice else ""
        conds = set_condition(
            conds, "Compatible", "False", "NoCompatibleImage", f"{exc}.{running}", gen, now
        )
        return finish()
    conds = set_condition(
        conds,
        "Compatible",
        "True",
        "ImageSelected",
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
        checkpoint_bytes=obs.shape.checkpoint_bytes if obs.shape else None,
    )
    current = ((obs.rayservice or {}).get("metadata") or {}).get("annotations") or {}
    wanted = manifest["metadata"]["annotations"][SPEC_HASH]
    # Without the shape (a kept plan, storage unreachable) the cache size would be a guess:
    # leave a running service as it is rather than restart it for that.
    if current.get(SPEC_HASH) != wanted and (obs.shape is not None or obs.rayservice is None):
        decision.apply = manifest
        _children(decision, obs, config, manifest, current)
    conds = set_condition(
        conds,
        "Applied",
        "True",
        "Applied",
        f"RayService {model.metadata.name} at spec hash {wanted}",
        gen,
        now,
    )
    return finish()
