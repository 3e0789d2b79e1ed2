"""The KubeRay ``RayService`` for an InferenceModel: a CPU head group, one worker group with
exactly one Serve replica per worker pod, ``serveConfigV2`` running the serving app with typed
``ServingArgs``, Serve autoscaling from ``spec.replicas`` and Ray's in-tree autoscaler.

Replica counts live only in the Serve config (applied in place by KubeRay) and the worker
group's bounds are fixed, so changing ``spec.replicas`` never touches the RayCluster's spec.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import yaml

from ridgeline.api.inference_model import POD_IDLE_S, InferenceModel, Placement
from ridgeline.api.plan import Plan
from ridgeline.api.serving_args import (
    IMPORT_PATH,
    ONGOING_HEADROOM,
    PREFILL_CHUNK_TOKENS,
    QUEUE_FACTOR,
    SCHEMA_VERSION,
    USABLE_MEMORY_FRACTION,
    ServingArgs,
    deployment_options,
)
from ridgeline.cold_start import wait_bound_seconds
from ridgeline.planner.pools import NodePool
from ridgeline.platform_config import PlatformConfig
from ridgeline.quantity import parse_quantity
from ridgeline.render import node_cache, pods
from ridgeline.render.groups import (
    REPLICA_RESOURCE,
    head_group,
    is_cpu_plan,
    worker_group,
)
from ridgeline.render.meta import object_meta
from ridgeline.render.security import (
    auth_options,
    build_network_policy,
)

SPEC_HASH = "ridgeline.dev/spec-hash"
# Hash of what the RayCluster is made of (not its replica bounds): a change means new pods.
CLUSTER_HASH = "ridgeline.dev/cluster-hash"
DEPLOYMENT = "model"
# A replica Serve stops (downscaling) finishes its answers first for up to this long: the
# longest answer (maxContextTokens) at the planned step, at least Serve's own 20 s default plus
# margin, at most 10 minutes (a stuck request must not hold a GPU node for longer).
DRAIN_FLOOR_S = 30
DRAIN_CAP_S = 600

# libyaml's emitter when PyYAML has it: the same text as yaml.safe_dump (a test holds them
# equal, so the spec hash does not move), six times faster; rendering runs in every reconcile.
_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def serving_args_for(
    model: InferenceModel,
    plan: Plan,
    cache_dir: str,
    replica_cpus: int = 1,
    node_cache_dir: str | None = None,
) -> ServingArgs:
    """The serving app's arguments for a plan: the operator's and `ridgeline serve`'s."""
    spec = model.spec
    return ServingArgs(
        model_uri=spec.model.uri,
        model_name=model.metadata.name,
        sha256_manifest=spec.model.sha256_manifest,
        quantization=spec.quantization,
        compute_dtype=plan.compute_dtype,
        max_batch_size=plan.batch_target,
        max_context_tokens=spec.workload.max_context_tokens,
        gpus_per_replica=0 if is_cpu_plan(plan) else plan.gpus_per_replica,
        # The replica holds the batch being decoded and the next one; the rest waits in Serve's
        # router, where a replica that autoscaling adds can take it.
        max_queued_requests=plan.batch_target,
        cache_dir=cache_dir,
        schema_version=SCHEMA_VERSION,
        max_batch_by_memory=max(plan.max_batch_by_memory, 1),
        prefill_chunk_tokens=PREFILL_CHUNK_TOKENS,
        usable_memory_fraction=USABLE_MEMORY_FRACTION,
        num_cpus=replica_cpus,
        ongoing_requests_headroom=ONGOING_HEADROOM,
        planned_step_seconds=plan.predicted.step_seconds,
        predicted_cold_start_s=plan.cold_start.seconds if plan.cold_start else None,
        cold_start_wait_s=wait_bound_seconds(plan.cold_start) if plan.cold_start else None,
        node_cache_dir=node_cache_dir,
    )


def drain_seconds(model: InferenceModel, plan: Plan) -> int:
    """Serve's ``graceful_shutdown_timeout_s`` for the plan (an idle replica stops at once)."""
    longest = model.spec.workload.max_context_tokens * plan.predicted.step_seconds
    return int(min(DRAIN_CAP_S, max(DRAIN_FLOOR_S, math.ceil(longest))))


def serve_config(
    model: InferenceModel, plan: Plan, config: PlatformConfig, replica_cpus: int = 1
) -> dict[str, Any]:
    node_dir = node_cache.MOUNT_PATH if node_cache.uses_node_cache(model, config) else None
    args = serving_args_for(model, plan, config.weights_cache_dir, replica_cpus, node_dir)
    options = deployment_options(args, REPLICA_RESOURCE)
    replicas = model.spec.replicas
    target = replicas.target_ongoing_requests or plan.batch_target
    return {
        "http_options": {"host": "0.0.0.0", "port": config.serve_port},
        "applications": [
            {
                "name": model.metadata.name,
                "import_path": IMPORT_PATH,
                "route_prefix": "/",
                "args": args.model_dump(mode="json", exclude_none=True),
                "deployments": [
                    {
                        "name": DEPLOYMENT,
                        # The batch, the next one and a few health checks (ServingArgs).
                        "max_ongoing_requests": options["max_ongoing_requests"],
                        # Beyond this, Serve's router answers 503: a bounded queue, never a
                        # backlog.
                        "max_queued_requests": QUEUE_FACTOR * plan.batch_target * replicas.max,
                        "graceful_shutdown_timeout_s": drain_seconds(model, plan),
                        "ray_actor_options": options["ray_actor_options"],
                        "autoscaling_config": {
                            "min_replicas": replicas.min,
                            # Start warm; scale to zero (min 0) only once idle.
                            "initial_replicas": max(replicas.min, 1),
                            "max_replicas": replicas.max,
                            "target_ongoing_requests": target,
                            # Idle this long before a replica goes (to zero as well).
                            "downscale_delay_s": replicas.scale_down_delay_seconds,
                        },
                    }
                ],
            }
        ],
    }


def spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _cluster_hash(cluster: dict[str, Any]) -> str:
    """What makes the pods, as KubeRay hashes it: without the worker counts."""
    groups = [
        {k: v for k, v in g.items() if k not in ("replicas", "minReplicas", "maxReplicas")}
        for g in cluster["workerGroupSpecs"]
    ]
    return spec_hash({**cluster, "workerGroupSpecs": groups})


def _replica_cpus(plan: Plan, pool: NodePool | None, config: PlatformConfig) -> int:
    """A CPU replica takes its whole pod's cores (Ray sizes torch's threads from num_cpus)."""
    if not is_cpu_plan(plan):
        return 1
    cpu = pods.cpu_worker_resources(pool, config)["cpu"]
    return max(1, math.floor(parse_quantity(cpu)))


def build_rayservice(
    model: InferenceModel,
    plan: Plan,
    placement: Placement,
    config: PlatformConfig,
    uid: str | None = None,
    *,
    pool: NodePool | None = None,
    checkpoint_bytes: int | None = None,
) -> dict[str, Any]:
    """``pool`` sizes the worker pods (its nodes' allocatable); ``checkpoint_bytes`` sizes the
    weight cache (an estimate from the plan where unknown)."""
    cache_bytes = checkpoint_bytes or pods.cache_bytes_estimate(plan)
    cluster: dict[str, Any] = {
        "rayVersion": config.ray_version,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {
            # A worker pod whose replica Serve removed goes after this; fixed so that changing
            # spec.replicas (scaleDownDelaySeconds included) leaves the cluster's spec alone.
            "idleTimeoutSeconds": POD_IDLE_S,
            "upscalingMode": "Default",
            "securityContext": pods.container_security_context(),
        },
        "headGroupSpec": head_group(model, placement, config, plan),
        "workerGroupSpecs": [worker_group(model, plan, placement, config, pool, cache_bytes)],
    }
    auth = auth_options(model, config)
    if auth is not None:
        cluster["authOptions"] = auth
    serve = serve_config(model, plan, config, _replica_cpus(plan, pool, config))
    spec: dict[str, Any] = {
        "serveConfigV2": yaml.dump(serve, Dumper=_DUMPER, sort_keys=False),
        # Recreate: KubeRay never starts a second cluster (no second set of GPUs); the
        # operator replaces the cluster itself when its pods change. Serve config changes
        # (batch, replica bounds) are applied in place either way.
        "upgradeStrategy": {
            "type": "None" if config.upgrade_strategy == "Recreate" else "NewCluster"
        },
        "rayClusterConfig": cluster,
    }
    metadata = object_meta(model, model.metadata.name, uid)
    # The spec hash covers the NetworkPolicy applied beside the RayService, so that a change
    # to it alone (the chart's networkPolicy values) is applied too.
    applied = {"spec": spec, "networkPolicy": build_network_policy(model, config, uid)}
    metadata["annotations"] = {
        SPEC_HASH: spec_hash(applied),
        CLUSTER_HASH: _cluster_hash(cluster),
    }
    manifest = {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": metadata, "spec": spec}
    # A plain tree (no shared sub-objects), so YAML dumps carry no anchors.
    tree: dict[str, Any] = json.loads(json.dumps(manifest))
    return tree


def serve_endpoint(model: InferenceModel, config: PlatformConfig) -> str:
    """KubeRay's Serve service for a RayService is ``<name>-serve-svc``."""
    ns = model.metadata.namespace or "default"
    return f"http://{model.metadata.name}-serve-svc.{ns}.svc:{config.serve_port}/v1"
