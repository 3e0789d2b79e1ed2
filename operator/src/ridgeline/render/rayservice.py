"""The KubeRay ``RayService`` for an InferenceModel: a CPU head group, one GPU worker group with
one Serve replica per worker pod, ``serveConfigV2`` running the serving app with typed
``ServingArgs``, Serve autoscaling from ``spec.replicas`` and Ray's in-tree autoscaler."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import yaml

from ridgeline.api.inference_model import GROUP, KIND, VERSION, InferenceModel, Placement
from ridgeline.api.plan import Plan
from ridgeline.planner import memory
from ridgeline.platform_config import PlatformConfig
from ridgeline.render.affinity import gpu_node_affinity
from ridgeline_serving.args import IMPORT_PATH, SCHEMA_VERSION, ServingArgs

SPEC_HASH = "ridgeline.dev/spec-hash"
MODEL_LABEL = "ridgeline.dev/model"
DEPLOYMENT = "model"
METRICS_PORT = 8080
CACHE_VOLUME = "weights-cache"
# Requests a replica takes beyond its batch before it answers 429 (ServingArgs default: 4x).
QUEUE_FACTOR = 4
# Ray CPUs per Serve replica, and requests Ray Serve lets through beyond batch + queue (health
# checks, /v1/models): both reach the replica in ServingArgs.
REPLICA_CPUS = 1
ONGOING_HEADROOM = 8

SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 1000,
}


def labels(model: InferenceModel) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "ridgeline-model",
        "app.kubernetes.io/instance": model.metadata.name,
        "app.kubernetes.io/managed-by": "ridgeline",
        MODEL_LABEL: model.metadata.name,
    }


def serving_args_for(model: InferenceModel, plan: Plan, cache_dir: str) -> ServingArgs:
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
        gpus_per_replica=0 if plan.gpu_product.lower() == "cpu" else plan.gpus_per_replica,
        max_queued_requests=QUEUE_FACTOR * plan.batch_target,
        cache_dir=cache_dir,
        schema_version=SCHEMA_VERSION,
        max_batch_by_memory=max(plan.max_batch_by_memory, 1),
        prefill_chunk_tokens=memory.PREFILL_CHUNK_TOKENS,
        usable_memory_fraction=memory.USABLE_MEMORY_FRACTION,
        num_cpus=REPLICA_CPUS,
        ongoing_requests_headroom=ONGOING_HEADROOM,
    )


def serve_config(model: InferenceModel, plan: Plan, config: PlatformConfig) -> dict[str, Any]:
    args = serving_args_for(model, plan, config.weights_cache_dir)
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
                        "max_ongoing_requests": args.max_ongoing_requests,
                        "ray_actor_options": {
                            "num_gpus": args.gpus_per_replica,
                            "num_cpus": args.num_cpus,
                        },
                        "autoscaling_config": {
                            "min_replicas": replicas.min,
                            # Start warm; scale to zero (min 0) only once idle.
                            "initial_replicas": max(replicas.min, 1),
                            "max_replicas": replicas.max,
                            "target_ongoing_requests": target,
                        },
                    }
                ],
            }
        ],
    }


def _worker(
    model: InferenceModel, plan: Plan, placement: Placement, config: PlatformConfig
) -> dict[str, Any]:
    cpu_pool = plan.gpu_product.lower() == "cpu"
    gpus = plan.gpus_per_replica
    if cpu_pool:
        limits = {
            "cpu": config.cpu_worker_resources.cpu,
            "memory": config.cpu_worker_resources.memory,
        }
        affinity: dict[str, Any] = {
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
        tolerations: list[dict[str, str]] = []
    else:
        limits = {
            "cpu": str(config.worker_cpu_per_gpu * gpus),
            "memory": f"{config.worker_memory_gib_per_gpu * gpus}Gi",
            "nvidia.com/gpu": str(gpus),
        }
        affinity = gpu_node_affinity(plan.gpu_product, placement.min_driver)
        tolerations = list(config.gpu_tolerations)
    container: dict[str, Any] = {
        "name": "ray-worker",
        "image": placement.image,
        "resources": {"limits": limits, "requests": dict(limits)},
        "env": [{"name": "RIDGELINE_CACHE_DIR", "value": config.weights_cache_dir}],
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "volumeMounts": [{"name": CACHE_VOLUME, "mountPath": config.weights_cache_dir}],
        "securityContext": SECURITY_CONTEXT,
    }
    if model.spec.model.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": model.spec.model.credentials_secret}}]
    return {
        "groupName": "gpu" if not cpu_pool else "cpu",
        "minReplicas": model.spec.replicas.min,
        "maxReplicas": model.spec.replicas.max,
        "rayStartParams": {},
        "template": {
            "metadata": {"labels": labels(model)},
            "spec": {
                "affinity": affinity,
                "tolerations": tolerations,
                "containers": [container],
                "volumes": [_cache_volume(config)],
            },
        },
    }


def _cache_volume(config: PlatformConfig) -> dict[str, Any]:
    if config.weights_cache_volume == "emptyDir":
        return {"name": CACHE_VOLUME, "emptyDir": {}}
    # One download per node: replicas on a node share its cache (and its lock).
    return {
        "name": CACHE_VOLUME,
        "hostPath": {"path": config.weights_cache_dir, "type": "DirectoryOrCreate"},
    }


def _head(model: InferenceModel, placement: Placement, config: PlatformConfig) -> dict[str, Any]:
    res = {"cpu": config.head_resources.cpu, "memory": config.head_resources.memory}
    return {
        # The head runs the Serve controller and proxy, no model replicas.
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
        "template": {
            "metadata": {"labels": labels(model)},
            "spec": {
                "containers": [
                    {
                        "name": "ray-head",
                        "image": config.head_image or placement.image,
                        "resources": {"limits": res, "requests": dict(res)},
                        "ports": [
                            {"name": "gcs", "containerPort": 6379},
                            {"name": "dashboard", "containerPort": 8265},
                            {"name": "client", "containerPort": 10001},
                            {"name": "serve", "containerPort": config.serve_port},
                            {"name": "metrics", "containerPort": METRICS_PORT},
                        ],
                        "securityContext": SECURITY_CONTEXT,
                    }
                ],
            },
        },
    }


def spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def build_rayservice(
    model: InferenceModel,
    plan: Plan,
    placement: Placement,
    config: PlatformConfig,
    uid: str | None = None,
) -> dict[str, Any]:
    spec = {
        "serveConfigV2": yaml.safe_dump(serve_config(model, plan, config), sort_keys=False),
        "rayClusterConfig": {
            "rayVersion": config.ray_version,
            "enableInTreeAutoscaling": True,
            "autoscalerOptions": {"idleTimeoutSeconds": 60, "upscalingMode": "Default"},
            "headGroupSpec": _head(model, placement, config),
            "workerGroupSpecs": [_worker(model, plan, placement, config)],
        },
    }
    metadata: dict[str, Any] = {
        "name": model.metadata.name,
        "namespace": model.metadata.namespace,
        "labels": labels(model),
        "annotations": {SPEC_HASH: spec_hash(spec)},
    }
    if uid:
        metadata["ownerReferences"] = [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": model.metadata.name,
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    # A plain tree (no shared sub-objects), so YAML dumps carry no anchors.
    manifest = {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": metadata, "spec": spec}
    return copy.deepcopy(manifest)


def serve_endpoint(model: InferenceModel, config: PlatformConfig) -> str:
    """KubeRay's Serve service for a RayService is ``<name>-serve-svc``."""
    ns = model.metadata.namespace or "default"
    return f"http://{model.metadata.name}-serve-svc.{ns}.svc:{config.serve_port}/v1"
