"""What every rendered Ray pod carries: Pod Security "restricted" contexts, resources sized from
the pool's nodes, the weight cache volume, tolerations and pull secrets."""

from __future__ import annotations

import copy
import math
from typing import Any

from ridgeline.api.inference_model import Quantization
from ridgeline.api.plan import Plan
from ridgeline.cold_start import wait_bound_seconds
from ridgeline.instance_shapes import smallest_per_gpu
from ridgeline.planner.pools import GIB, NodePool
from ridgeline.platform_config import PlatformConfig

RAY_UID = 1000  # the serving image's user
# Ray writes each process's output to files under /tmp/ray by default; this sends it to the
# container's stderr instead, so `kubectl logs` (and a cluster's log collector) shows the
# replica's download progress and start-up breakdown. KubeRay's samples set it the same way.
LOG_TO_STDERR = {"name": "RAY_LOG_TO_STDERR", "value": "1"}
# The wait bound for a starting model, for Serve's proxy on every Ray pod (the proxy, not the
# replica, holds a request while no replica runs): ridgeline_serving.cold_start_guard reads
# these names (a unit test holds them equal).
COLD_START_WAIT_ENV = "RIDGELINE_COLD_START_WAIT_S"
PREDICTED_COLD_START_ENV = "RIDGELINE_PREDICTED_COLD_START_S"
CACHE_VOLUME = "weights-cache"
# Beyond the checkpoint: tokenizer files, Ray's session directory and logs in /tmp/ray.
CACHE_HEADROOM_BYTES = 2 * GIB
# Checkpoint bytes per in-memory weight byte, where the checkpoint's own size is unknown: a
# 16-bit checkpoint quantized at load time to int8 (1 byte) or NF4 (about half a byte).
_CHECKPOINT_PER_WEIGHT_BYTE = {Quantization.NONE: 1, Quantization.INT8: 2, Quantization.NF4: 4}

# Pod Security Standards, "restricted" profile (v1.25+): non-root, RuntimeDefault seccomp, no
# privilege escalation, every capability dropped. fsGroup makes the cache volume the user's.
POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": RAY_UID,
    "runAsGroup": RAY_UID,
    "fsGroup": RAY_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": RAY_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def pod_spec_extras(config: PlatformConfig) -> dict[str, Any]:
    """Fields every model pod shares (a fresh copy each call: the manifest stays a tree)."""
    extras: dict[str, Any] = {"securityContext": copy.deepcopy(POD_SECURITY_CONTEXT)}
    if config.image_pull_secrets:
        extras["imagePullSecrets"] = [{"name": n} for n in config.image_pull_secrets]
    return extras


def cold_start_env(plan: Plan) -> list[dict[str, str]]:
    """The proxy's wait bound for a starting replica, from the plan's predicted cold start
    (none before the operator predicts one)."""
    if plan.cold_start is None:
        return []
    return [
        {"name": COLD_START_WAIT_ENV, "value": f"{wait_bound_seconds(plan.cold_start):g}"},
        {"name": PREDICTED_COLD_START_ENV, "value": f"{plan.cold_start.seconds:g}"},
    ]


def container_security_context() -> dict[str, Any]:
    return copy.deepcopy(CONTAINER_SECURITY_CONTEXT)


def _share(pool: NodePool | None, gpus: int) -> float | None:
    if pool is None or pool.is_cpu or pool.gpus_per_node <= 0:
        return None
    return gpus / pool.gpus_per_node


def gpu_worker_resources(
    gpus: int, pool: NodePool | None, config: PlatformConfig
) -> dict[str, str]:
    """CPU and memory in proportion to the node's GPUs the pod holds, capped by the per-GPU
    figures of the config. Where the pool does not say its nodes' size, the smallest common
    instance shape of its GPU (instance_shapes.py) caps them; the per-GPU figures alone where
    neither is known."""
    cpu = config.worker_cpu_per_gpu * gpus
    memory_gib = config.worker_memory_gib_per_gpu * gpus
    fraction = config.allocatable_fraction
    share = _share(pool, gpus)
    if pool is not None and share is not None:
        shape = smallest_per_gpu(pool.gpu_product)
        if pool.cpus:
            cpu = min(cpu, math.floor(pool.cpus * fraction * share))
        elif shape is not None:
            cpu = min(cpu, math.floor(shape.cpus * gpus * fraction))
        if pool.memory_gib:
            memory_gib = min(memory_gib, math.floor(pool.memory_gib * fraction * share))
        elif shape is not None:
            memory_gib = min(memory_gib, math.floor(shape.memory_gib * gpus * fraction))
    return {
        "cpu": str(max(1, cpu)),
        "memory": f"{max(1, memory_gib)}Gi",
        "nvidia.com/gpu": str(gpus),
    }


def cpu_worker_resources(pool: NodePool | None, config: PlatformConfig) -> dict[str, str]:
    """One replica per CPU node: most of the node where the pool says its size."""
    out = {"cpu": config.cpu_worker_resources.cpu, "memory": config.cpu_worker_resources.memory}
    if pool is not None and pool.cpus:
        out["cpu"] = str(max(1, math.floor(pool.cpus * config.allocatable_fraction)))
    if pool is not None and pool.memory_gib:
        out["memory"] = f"{max(1, math.floor(pool.memory_gib * config.allocatable_fraction))}Gi"
    return out


def cache_bytes_estimate(plan: Plan) -> int:
    return plan.weight_bytes * _CHECKPOINT_PER_WEIGHT_BYTE[Quantization(plan.quantization)]


def ephemeral_storage_request(checkpoint_bytes: int) -> str:
    """The scheduler places the pod where its download fits, and under disk pressure the kubelet
    evicts pods using more than they asked for first: asking for the checkpoint keeps a big
    model from being the one evicted. No limit: exceeding a limit would evict it outright."""
    return f"{math.ceil((checkpoint_bytes + CACHE_HEADROOM_BYTES) / GIB)}Gi"


def cache_volume(config: PlatformConfig) -> dict[str, Any]:
    if config.weights_cache_volume == "emptyDir":
        return {"name": CACHE_VOLUME, "emptyDir": {}}
    # One download per node: replicas on a node share its cache (and its lock).
    return {
        "name": CACHE_VOLUME,
        "hostPath": {"path": config.weights_cache_dir, "type": "DirectoryOrCreate"},
    }


def cache_init_containers(config: PlatformConfig, image: str) -> list[dict[str, Any]]:
    """The kubelet creates a hostPath directory as root 0755; the replica runs as uid 1000 and
    takes its download lock in the cache root. An init container hands the directory over
    (hostPath needs the "privileged" Pod Security level anyway)."""
    if config.weights_cache_volume != "hostPath":
        return []
    return [
        {
            "name": "cache-owner",
            "image": image,
            "command": ["chown", f"{RAY_UID}:{RAY_UID}", config.weights_cache_dir],
            "securityContext": {
                "runAsUser": 0,
                "runAsNonRoot": False,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumeMounts": [{"name": CACHE_VOLUME, "mountPath": config.weights_cache_dir}],
            "resources": {
                "requests": {"cpu": "10m", "memory": "16Mi"},
                "limits": {"cpu": "100m", "memory": "64Mi"},
            },
        }
    ]
