"""The Ray head and worker groups of a model's RayCluster: what their pods are and where they
go (the pool's nodes, its tolerations, the runtime class), and the ports KubeRay probes."""

from __future__ import annotations

from typing import Any

from ridgeline.api.inference_model import InferenceModel, Placement
from ridgeline.api.plan import Plan
from ridgeline.planner.pools import NodePool
from ridgeline.platform_config import PlatformConfig
from ridgeline.render import node_cache, pods
from ridgeline.render.affinity import gpu_node_affinity, label_node_affinity
from ridgeline.render.meta import labels
from ridgeline.render.security import DASHBOARD_PORT, METRICS_PORT

# What the head sees of the node's GPUs through the NVIDIA container runtime: none.
NO_GPUS = {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}
# A Ray resource each worker pod offers once and each Serve replica takes once: one replica
# per pod, whatever CPUs or GPUs the pod has.
REPLICA_RESOURCE = "ridgeline_replica"
# The worker group's bound; Serve's autoscaling bounds (spec.replicas) decide within it.
MAX_WORKERS = 1000


def is_cpu_plan(plan: Plan) -> bool:
    return plan.gpu_product.lower() == "cpu"


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
    if is_cpu_plan(plan):
        return pods.cpu_worker_resources(pool, config)
    return pods.gpu_worker_resources(plan.gpus_per_replica, pool, config)


def worker_group(
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
    if is_cpu_plan(plan):
        affinity = _cpu_affinity()
        tolerations = list(config.tolerations)
    else:
        shared_by = pool.shared_by if pool is not None else None
        affinity = gpu_node_affinity(plan.gpu_product, placement.min_driver, shared_by)
        tolerations = [*config.gpu_tolerations, *config.tolerations]
    if pool is not None and pool.declared_by_labels:
        # Declared pools select on their template's labels; their driver is the declared one.
        affinity = label_node_affinity(pool.node_labels)
        tolerations += [t for t in pool.tolerations if t not in tolerations]
    container: dict[str, Any] = {
        "name": "ray-worker",
        "image": placement.image,
        "resources": {"limits": limits, "requests": requests},
        "env": [
            pods.LOG_TO_STDERR,
            *pods.cold_start_env(plan),
        ],
        # KubeRay's worker readiness probe asks Serve's proxy on the port named "serve"
        # (8000 where none is named): a worker must name the port the proxy listens on.
        "ports": [
            {"name": "serve", "containerPort": config.serve_port},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
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
    if node_cache.uses_node_cache(model, config):  # the emptyDir stays: the fallback's
        container["volumeMounts"].append(node_cache.pod_mount())
        spec["volumes"].append(node_cache.pod_volume(model))
    init = pods.cache_init_containers(config, placement.image)
    if init:
        spec["initContainers"] = init
    if config.runtime_class_name and not is_cpu_plan(plan):
        spec["runtimeClassName"] = config.runtime_class_name
    return {
        "groupName": "cpu" if is_cpu_plan(plan) else "gpu",
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


def head_group(
    model: InferenceModel, placement: Placement, config: PlatformConfig, plan: Plan
) -> dict[str, Any]:
    """``plan`` gives the head's Serve proxy the wait bound for a starting model: with no
    replica running (scaled to zero) the head's proxy is the one that takes requests."""
    res = {"cpu": config.head_resources.cpu, "memory": config.head_resources.memory}
    image = config.head_image or placement.image
    spec: dict[str, Any] = {
        **pods.pod_spec_extras(config),
        "tolerations": [*config.tolerations, *config.head_tolerations],
    }
    if config.head_node_selector:
        spec["nodeSelector"] = dict(config.head_node_selector)
    return {
        # The head runs the Serve controller and proxy, no model replicas: it claims no CPU for
        # tasks and no GPU, even on a GPU node whose default runtime is nvidia, where the CUDA
        # image's NVIDIA_VISIBLE_DEVICES=all would show it every GPU (`void`: none). The
        # dashboard listens on the pod IP for the KubeRay operator (behind Ray's token and the
        # NetworkPolicy).
        "rayStartParams": {"num-cpus": "0", "num-gpus": "0", "dashboard-host": "0.0.0.0"},
        "template": {
            "metadata": {"labels": labels(model)},
            "spec": {
                **spec,
                "containers": [
                    {
                        "name": "ray-head",
                        "image": image,
                        "resources": {"limits": res, "requests": dict(res)},
                        "env": [pods.LOG_TO_STDERR, NO_GPUS, *pods.cold_start_env(plan)],
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
