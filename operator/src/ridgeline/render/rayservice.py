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
from ridgeline.planner import memory
from ridgeline.planner.pools import NodePool
from ridgeline.platform_config import PlatformConfig
from ridgeline.quantity import parse_quantity
from ridgeline.render import pods
from ridgeline.render.affinity import gpu_node_affinity
from ridgeline.render.meta import labels, object_meta
from ridgeline.render.security import (
    DASHBOARD_PORT,
    METRICS_PORT,
    auth_options,
    build_network_policy,
)
from ridgeline_serving.args import IMPORT_PATH, SCHEMA_VERSION, ServingArgs

SPEC_HASH = "ridgeline.dev/spec-hash"
# Hash of what the RayCluster is made of (not its replica bounds): a change means new pods.
CLUSTER_HASH = "ridgeline.dev/cluster-hash"
DEPLOYMENT = "model"
# Requests Serve's router holds per replica (at most) before it answers 503.
QUEUE_FACTOR = 4
# Requests Ray Serve lets through beyond batch + queue (health checks, /v1/models): they
# reach the replica in ServingArgs.
ONGOING_HEADROOM = 8
# A Ray resource each worker pod offers once and each Serve replica takes once: one replica
# per pod, whatever CPUs or GPUs the pod has.
REPLICA_RESOURCE = "ridgeline_replica"
# The worker group's bound; Serve's autoscaling bounds (spec.replicas) decide within it.
MAX_WORKERS = 1000

# libyaml's emitter when PyYAML has it: the same text as yaml.safe_dump (a test holds them
# equal, so the spec hash does not move), six times faster; rendering runs in every reconcile.
_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def serving_args_for(
    model: InferenceModel, plan: Plan, cache_dir: str, replica_cpus: int = 1
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
        gpus_per_replica=0 if _cpu(plan) else plan.gpus_per_replica,
        # The replica holds the batch being decoded and the next one; the rest waits in Serve's
        # router, where a replica that autoscaling adds can take it.
        max_queued_requests=plan.batch_target,
        cache_dir=cache_dir,
        schema_version=SCHEMA_VERSION,
        max_batch_by_memory=max(plan.max_batch_by_memory, 1),
        prefill_chunk_tokens=memory.PREFILL_CHUNK_TOKENS,
        usable_memory_fraction=memory.USABLE_MEMORY_FRACTION,
        num_cpus=replica_cpus,
        ongoing_requests_headroom=ONGOING_HEADROOM,
        planned_step_seconds=plan.predicted.step_seconds,
    )


def _cpu(plan: Plan) -> bool:
    return plan.gpu_product.lower() == "cpu"


def serve_config(
    model: InferenceModel, plan: Plan, config: PlatformConfig, replica_cpus: int = 1
) -> dict[str, Any]:
    args = serving_args_for(model, plan, config.weights_cache_dir, replica_cpus)
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
                        "max_ongoing_requests": args.max_ongoing_requests,
                        # Beyond this, Serve answers 503: a bounded queue, never a backlog.
                        "max_queued_requests": QUEUE_FACTOR * plan.batch_target * replicas.max,
                        "ray_actor_options": {
                            "num_gpus": args.gpus_per_replica,
                            "num_cpus": args.num_cpus,
                            "resources": {REPLICA_RESOURCE: 1},
                        },
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


def _cpu_affinity() -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"}
                        ]
                    }
                ]
            }
        }
    }


def _worker_resources(plan: Plan, pool: NodePool | None, config: PlatformConfig) -> dict[str, str]:
    if _cpu(plan):
        return pods.cpu_worker_resources(pool, config)
    return pods.gpu_worker_resources(plan.gpus_per_replica, pool, config)


def _worker(
    model: InferenceModel,
    plan: Plan,
    placement: Placement,
    config: PlatformConfig,
    pool: NodePool | None,
    cache_bytes: int,
) -> dict[str, Any]:
    limits = _worker_resources(plan, pool, config)
    requests = dict(limits)
    if config.weights_cache_volume == "emptyDir":
        requests["ephemeral-storage"] = pods.ephemeral_storage_request(cache_bytes)
    if _cpu(plan):
        affinity = _cpu_affinity()
        tolerations = list(config.tolerations)
    else:
        shared_by = pool.shared_by if pool is not None else None
        affinity = gpu_node_affinity(plan.gpu_product, placement.min_driver, shared_by)
        tolerations = [*config.gpu_tolerations, *config.tolerations]
    container: dict[str, Any] = {
        "name": "ray-worker",
        "image": placement.image,
        "resources": {"limits": limits, "requests": requests},
        "env": [
            {"name": "RIDGELINE_CACHE_DIR", "value": config.weights_cache_dir},
            pods.LOG_TO_STDERR,
        ],
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "volumeMounts": [{"name": pods.CACHE_VOLUME, "mountPath": config.weights_cache_dir}],
        "securityContext": pods.container_security_context(),
    }
    if model.spec.model.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": model.spec.model.credentials_secret}}]
    spec: dict[str, Any] = {
        **pods.pod_spec_extras(config),
        "affinity": affinity,
        "tolerations": tolerations,
        "containers": [container],
        "volumes": [pods.cache_volume(config)],
    }
    init = pods.cache_init_containers(config, placement.image)
    if init:
        spec["initContainers"] = init
    return {
        "groupName": "cpu" if _cpu(plan) else "gpu",
        # Workers that start with the head (Serve's initial replicas); then Serve's autoscaling
        # asks for replicas and Ray's autoscaler adds or removes the pods they need. KubeRay
        # leaves these three out of its cluster hash and never updates them on a running
        # cluster, so the bounds are fixed rather than copied from spec.replicas.
        "replicas": max(model.spec.replicas.min, 1),
        "minReplicas": 0,
        "maxReplicas": MAX_WORKERS,
        "rayStartParams": {},
        # KubeRay's group-level resources (not a JSON string in rayStartParams, which its pod
        # builder fails to parse when escaped): KubeRay passes them to `ray start`, and Ray's
        # autoscaler reads them to know that a new pod of this group holds one replica.
        "resources": {REPLICA_RESOURCE: "1"},
        "template": {"metadata": {"labels": labels(model)}, "spec": spec},
    }


def _head(model: InferenceModel, placement: Placement, config: PlatformConfig) -> dict[str, Any]:
    res = {"cpu": config.head_resources.cpu, "memory": config.head_resources.memory}
    image = config.head_image or placement.image
    return {
        # The head runs the Serve controller and proxy, no model replicas. The dashboard
        # listens on the pod IP for the KubeRay operator (behind Ray's token and the
        # NetworkPolicy).
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
        "template": {
            "metadata": {"labels": labels(model)},
            "spec": {
                **pods.pod_spec_extras(config),
                "tolerations": list(config.tolerations),
                "containers": [
                    {
                        "name": "ray-head",
                        "image": image,
                        "resources": {"limits": res, "requests": dict(res)},
                        "env": [pods.LOG_TO_STDERR],
                        "ports": [
                            {"name": "gcs", "containerPort": 6379},
                            {"name": "dashboard", "containerPort": DASHBOARD_PORT},
                            {"name": "serve", "containerPort": config.serve_port},
                            {"name": "metrics", "containerPort": METRICS_PORT},
                        ],
                        "securityContext": pods.container_security_context(),
                    }
                ],
            },
        },
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
    if not _cpu(plan):
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
        "headGroupSpec": _head(model, placement, config),
        "workerGroupSpecs": [_worker(model, plan, placement, config, pool, cache_bytes)],
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
