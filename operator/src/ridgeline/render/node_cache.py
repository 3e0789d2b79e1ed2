"""The node weight cache as a model's pods see it (issue 24): a PersistentVolume over the
checkpoint's own directory of the node root (hostPath, so only the agent's namespace needs the
``privileged`` Pod Security level), bound to a claim in the model's namespace, which the worker
pods mount read-only (a ``persistentVolumeClaim`` volume is admitted under ``restricted``).
A pod sees its own URI's weights only, never another tenant's."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from ridgeline.api.inference_model import InferenceModel
from ridgeline.api.node_cache import COMPONENT_LABEL, MANAGED_BY, MANAGED_BY_LABEL
from ridgeline.api.node_cache_scope import covers
from ridgeline.planner.pools import MIB, NodePool
from ridgeline.platform_config import PlatformConfig
from ridgeline.render.affinity import GFD
from ridgeline.render.meta import MODEL_LABEL, labels, object_meta

VOLUME = "node-weights"
# Where a worker pod mounts its checkpoint's directory (ServingArgs.node_cache_dir).
MOUNT_PATH = "/var/lib/ridgeline/node-weights"
# Static binding only: no StorageClass object exists or is needed.
STORAGE_CLASS = "ridgeline-node-cache"
MODEL_NAMESPACE_LABEL = "ridgeline.dev/model-namespace"
COMPONENT = "node-weights"
# Every PersistentVolume rendered here, of any model (the operator's sweep lists them).
VOLUMES_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY},{COMPONENT_LABEL}={COMPONENT}"
MIN_CAPACITY_BYTES = MIB


def uses_node_cache(model: InferenceModel, config: PlatformConfig) -> bool:
    """Whether the model's pods mount the node cache: enabled, and a model the cache covers
    (an object store's; a ``file://`` model is read where it is)."""
    return config.node_cache.enabled and covers(model.spec.model.uri)


def checkpoint_directory(uri: str) -> str:
    """The checkpoint's directory under the node root: ``ridgeline.storage.download.cache_key``
    (the pure core may not import storage; a unit test holds the two equal)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", uri.split("://", 1)[-1])[-60:]
    return f"{readable}-{hashlib.sha256(uri.encode()).hexdigest()[:12]}"


def model_uid(model: InferenceModel) -> str:
    """``metadata.uid`` as the API server gave it (the operator keeps it in the model it
    reads); empty where the model comes from a file (``ridgeline render``)."""
    return str((model.metadata.model_extra or {}).get("uid") or "")


def _hash(model: InferenceModel) -> str:
    """The uid is in it: a model deleted and made again under its name and URI gets new
    names, not the old ones still terminating. 64 bits: a tenant cannot search out a name
    that collides with another's volume (the names are cluster-wide)."""
    ns = model.metadata.namespace or "default"
    key = f"{ns}/{model.metadata.name}/{model_uid(model)}/{model.spec.model.uri}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def volume_name(model: InferenceModel) -> str:
    """The PersistentVolume's (cluster-scoped) name: a new URI, or a new model under the same
    name, is a new volume."""
    return f"ridgeline-weights-{_hash(model)}"


def claim_name(model: InferenceModel) -> str:
    return f"{model.metadata.name}-weights-{_hash(model)}"


def _capacity(checkpoint_bytes: int) -> str:
    return str(max(checkpoint_bytes, MIN_CAPACITY_BYTES))


def _labels(model: InferenceModel) -> dict[str, str]:
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        COMPONENT_LABEL: COMPONENT,
        MODEL_NAMESPACE_LABEL: model.metadata.namespace or "default",
        MODEL_LABEL: model.metadata.name,
    }


def volume_selector(model: InferenceModel) -> str:
    """Label selector of every PersistentVolume rendered for this model (any URI)."""
    return ",".join(f"{k}={v}" for k, v in _labels(model).items())


def build_persistent_volume(
    model: InferenceModel, config: PlatformConfig, checkpoint_bytes: int
) -> dict[str, Any]:
    """The checkpoint's directory on whichever node the pod lands on (DirectoryOrCreate: a node
    the agent has not filled yet gives an empty directory, and the replica downloads). The
    claimRef binds it to this model's claim alone; Retain: deleting the claim never deletes
    the node's files (the agent owns them)."""
    ns = model.metadata.namespace or "default"
    root = config.node_cache.host_path.rstrip("/")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume_name(model), "labels": _labels(model)},
        "spec": {
            "capacity": {"storage": _capacity(checkpoint_bytes)},
            "accessModes": ["ReadOnlyMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": STORAGE_CLASS,
            "volumeMode": "Filesystem",
            "hostPath": {
                "path": f"{root}/{checkpoint_directory(model.spec.model.uri)}",
                "type": "DirectoryOrCreate",
            },
            "claimRef": {
                "kind": "PersistentVolumeClaim",
                "namespace": ns,
                "name": claim_name(model),
            },
        },
    }


def build_persistent_volume_claim(
    model: InferenceModel, checkpoint_bytes: int, uid: str | None
) -> dict[str, Any]:
    """The model's claim on its volume, owned by the model (garbage-collected with it)."""
    metadata = object_meta(model, claim_name(model), uid)
    metadata["labels"] = {**labels(model), **_labels(model)}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata,
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": STORAGE_CLASS,
            "volumeName": volume_name(model),
            "volumeMode": "Filesystem",
            "resources": {"requests": {"storage": _capacity(checkpoint_bytes)}},
        },
    }


def build_volumes(
    model: InferenceModel, config: PlatformConfig, checkpoint_bytes: int, uid: str | None
) -> list[dict[str, Any]]:
    """The volume and its claim, where the model uses the node cache (else none)."""
    if not uses_node_cache(model, config):
        return []
    return [
        build_persistent_volume(model, config, checkpoint_bytes),
        build_persistent_volume_claim(model, checkpoint_bytes, uid),
    ]


def pod_volume(model: InferenceModel) -> dict[str, Any]:
    return {
        "name": VOLUME,
        "persistentVolumeClaim": {"claimName": claim_name(model), "readOnly": True},
    }


def pod_mount() -> dict[str, Any]:
    return {"name": VOLUME, "mountPath": MOUNT_PATH, "readOnly": True}


def node_labels(pool: NodePool) -> dict[str, str]:
    """Labels every node of the pool carries, for the agent to know whether its node is one:
    a declared pool's nodeLabels, else GPU Feature Discovery's product (and the share of a
    time-sliced GPU); none for a CPU pool (every node an agent runs on)."""
    if pool.declared_by_labels:
        return dict(pool.node_labels)
    if pool.is_cpu:
        return {}
    out = {f"{GFD}gpu.product": pool.gpu_product}
    if pool.shared_by:
        out[f"{GFD}gpu.replicas"] = str(pool.shared_by)
    return out
