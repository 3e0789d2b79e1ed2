"""The node weight cache as rendered (issue 24): the config, the PersistentVolume over the
checkpoint's directory and its claim, the worker pod's read-only mount (still Pod Security
"restricted"), ServingArgs.node_cache_dir, the pool's node labels for the agent, and the cold
start the planner expects from the cache."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from ridgeline import cold_start
from ridgeline.api import InferenceModel
from ridgeline.api.serving_args import ServingArgs
from ridgeline.compat import choose_image
from ridgeline.planner import NodePool, plan_model
from ridgeline.platform_config import NodeCacheConfig, PlatformConfig, default_config
from ridgeline.render import build_rayservice, node_cache
from ridgeline.storage.download import cache_key

H100 = NodePool(
    name="h100", gpu_product="NVIDIA-H100-80GB-HBM3", gpus_per_node=8, driver_version="550.54.15"
)
CPU = NodePool(name="cpu", gpu_product="cpu", gpus_per_node=0, cpus=8, memory_gib=32)
GIB = 2**30


def _enabled(**extra: Any) -> PlatformConfig:
    cache = NodeCacheConfig(enabled=True, namespace="ridgeline-system", **extra)
    return default_config().model_copy(update={"node_cache": cache})


def _model(
    name: str = "m", uri: str = "s3://models/m", ns: str = "team-a", uid: str | None = None
) -> InferenceModel:
    meta = {"name": name, "namespace": ns, **({"uid": uid} if uid else {})}
    return InferenceModel.model_validate({"metadata": meta, "spec": {"model": {"uri": uri}}})


def _render(
    shape: Any, config: PlatformConfig, pool: NodePool = H100, uri: str = "s3://models/m"
) -> dict[str, Any]:
    model = _model(uri=uri)
    plan = plan_model(shape, model.spec, [pool])
    placement = choose_image(config, pool, model.spec.quantization)
    return build_rayservice(
        model, plan, placement, config, pool=pool, checkpoint_bytes=shape.checkpoint_bytes
    )


def _worker_pod(rs: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    return pod


def _args(rs: dict[str, Any]) -> ServingArgs:
    app = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]
    return ServingArgs.model_validate(app["args"])


# ---- config -------------------------------------------------------------------------------


def test_config_is_off_by_default_and_reads_a_budget_quantity() -> None:
    assert default_config().node_cache.enabled is False
    cache = NodeCacheConfig.model_validate(
        {"enabled": True, "hostPath": "/mnt/nvme/w", "sizeBudget": "500Gi", "namespace": "rl"}
    )
    assert cache.size_budget == 500 * GIB
    assert cache.host_path == "/mnt/nvme/w"
    assert NodeCacheConfig.model_validate({"sizeBudget": 1000}).size_budget == 1000


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"sizeBudget": "lots"}, "not a byte count or quantity"),
        ({"sizeBudget": -1}, "greater than or equal to 0"),
        ({"hostPath": "relative/dir"}, "should match pattern"),
        ({"enabled": True}, "namespace"),
        ({"budget": 1}, "Extra inputs are not permitted"),
    ],
)
def test_config_refuses(values: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        NodeCacheConfig.model_validate(values)


def test_platform_config_takes_the_node_cache_group() -> None:
    config = PlatformConfig.model_validate(
        {"images": [{"image": "x", "torch": "2"}], "nodeCache": {"enabled": True, "namespace": "n"}}
    )
    assert config.node_cache.enabled


# ---- the volume, the claim and the pod ------------------------------------------------------


def test_the_directory_is_the_downloaders_cache_key() -> None:
    for uri in ("s3://models/m", "hf://Qwen/Qwen2.5-0.5B-Instruct", "gs://b/" + "x/" * 80):
        assert node_cache.checkpoint_directory(uri) == cache_key(uri)


def test_volume_and_claim_bind_to_each_other_over_the_checkpoints_directory() -> None:
    model = _model()
    config = _enabled(host_path="/mnt/nvme/weights/")
    pv, pvc = node_cache.build_volumes(model, config, 16 * GIB, "uid-1")
    directory = cache_key("s3://models/m")
    assert pv["metadata"]["name"] == node_cache.volume_name(model)
    assert pv["metadata"]["name"].startswith("ridgeline-weights-")
    assert len(pv["metadata"]["name"]) == len("ridgeline-weights-") + 16  # 64 bits
    assert "namespace" not in pv["metadata"]  # cluster-scoped
    assert pv["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "ridgeline",
        "app.kubernetes.io/component": "node-weights",
        "ridgeline.dev/model-namespace": "team-a",
        "ridgeline.dev/model": "m",
    }
    assert pv["spec"] == {
        "capacity": {"storage": str(16 * GIB)},
        "accessModes": ["ReadOnlyMany"],
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": "ridgeline-node-cache",
        "volumeMode": "Filesystem",
        "hostPath": {"path": f"/mnt/nvme/weights/{directory}", "type": "DirectoryOrCreate"},
        "claimRef": {
            "kind": "PersistentVolumeClaim",
            "namespace": "team-a",
            "name": pvc["metadata"]["name"],
        },
    }
    assert pvc["metadata"]["name"] == f"m-weights-{pv['metadata']['name'][-16:]}"
    assert pvc["metadata"]["namespace"] == "team-a"
    assert pvc["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert pvc["spec"] == {
        "accessModes": ["ReadOnlyMany"],
        "storageClassName": "ridgeline-node-cache",
        "volumeName": pv["metadata"]["name"],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": str(16 * GIB)}},
    }


def test_each_model_and_uri_gets_its_own_volume_of_at_least_a_mebibyte() -> None:
    """A model made again under its name and URI (a new uid) too: the old volumes may still be
    terminating."""
    config = _enabled()
    models = (
        _model(),
        _model(name="n"),
        _model(ns="team-b"),
        _model(uri="s3://models/v2"),
        _model(uid="u1"),
        _model(uid="u2"),
    )
    assert len({node_cache.volume_name(m) for m in models}) == 6
    assert len({node_cache.claim_name(m) for m in models}) == 6
    pv, pvc = node_cache.build_volumes(_model(), config, 0, None)
    assert pv["spec"]["capacity"]["storage"] == str(2**20)
    assert "ownerReferences" not in pvc["metadata"]
    assert node_cache.build_volumes(_model(), default_config(), GIB, "u") == []


def test_workers_mount_the_claim_read_only_beside_the_fallback_cache(shape_of) -> None:
    rs = _render(shape_of("llama-3.1-8b"), _enabled())
    pod = _worker_pod(rs)
    claim = node_cache.claim_name(_model())
    assert pod["volumes"] == [
        {"name": "weights-cache", "emptyDir": {}},
        {"name": "node-weights", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}},
    ]
    [container] = pod["containers"]
    assert container["volumeMounts"][-1] == {
        "name": "node-weights",
        "mountPath": "/var/lib/ridgeline/node-weights",
        "readOnly": True,
    }
    # the fallback download still fits: its ephemeral-storage request stays
    assert "ephemeral-storage" in container["resources"]["requests"]
    assert _args(rs).node_cache_dir == "/var/lib/ridgeline/node-weights"
    head = rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    assert "volumes" not in head


def test_pods_with_the_node_cache_stay_admissible_under_restricted(shape_of) -> None:
    """Pod Security "restricted" allows these volume types only (no hostPath), and the
    contexts stay as without the cache."""
    allowed = {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
    rs = _render(shape_of("llama-3.1-8b"), _enabled())
    groups = rs["spec"]["rayClusterConfig"]
    for group in [groups["headGroupSpec"], *groups["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= allowed, volume
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["capabilities"] == {"drop": ["ALL"]}


def test_disabled_renders_no_mount_and_no_node_cache_dir(shape_of) -> None:
    rs = _render(shape_of("llama-3.1-8b"), default_config())
    assert "node-weights" not in str(_worker_pod(rs))
    assert _args(rs).node_cache_dir is None


# ---- which nodes the agents fill ------------------------------------------------------------


def test_node_labels_of_a_pool() -> None:
    assert node_cache.node_labels(H100) == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    shared = NodePool(
        name="s",
        gpu_product="NVIDIA-A10G-SHARED",
        gpus_per_node=1,
        driver_version="550.54.15",
        shared_by=4,
    )
    assert node_cache.node_labels(shared) == {
        "nvidia.com/gpu.product": "NVIDIA-A10G-SHARED",
        "nvidia.com/gpu.replicas": "4",
    }
    declared = H100.model_copy(update={"node_labels": {"pool": "gpu-a"}})
    assert node_cache.node_labels(declared) == {"pool": "gpu-a"}
    assert node_cache.node_labels(CPU) == {}


# ---- the planner's cold start -----------------------------------------------------------------


def test_cold_start_from_the_node_cache_reads_the_disk_instead_of_downloading() -> None:
    size = 16 * 10**9
    plain = cold_start.predict(size, gpu=True)
    assert plain.node_cache_seconds is None
    assert plain.node_cache_read_seconds is None
    cached = cold_start.predict(size, gpu=True, node_cache=True)
    read = size / cold_start.NODE_DISK_READ_BYTES_PER_S
    assert cached.seconds == plain.seconds  # the download figure is still the bound's
    assert cached.node_cache_read_seconds == round(read, 1)
    assert cached.node_cache_seconds == round(
        cached.image_pull_seconds + read + cached.load_seconds + cached.start_seconds, 1
    )
    assert "node's disk" in cached.basis
    on_node = cold_start.predict(size, gpu=True, node_cache=True, image_on_node=True)
    assert on_node.node_cache_seconds == round(read + on_node.load_seconds + 20.0, 1)
    assert "image already on the node" in on_node.basis


def test_a_file_model_is_read_where_it_is_not_through_the_node_cache(shape_of: Any) -> None:
    """The cache covers object stores only: a file:// model gets no volume, no claim, no mount
    and no node_cache_dir, with the cache enabled (its pods read the path itself)."""
    config = _enabled()
    uri = "file:///models/m"
    llama_8b = shape_of("llama-3.1-8b")
    rs = _render(llama_8b, config, uri=uri)
    pod = _worker_pod(rs)
    assert [v["name"] for v in pod["volumes"]] == ["weights-cache"]
    assert all(m["name"] != node_cache.VOLUME for m in pod["containers"][0]["volumeMounts"])
    assert _args(rs).node_cache_dir is None
    assert node_cache.build_volumes(_model(uri=uri), config, GIB, "uid-1") == []
    # ... and an object store's model with the same config does mount it.
    assert node_cache.build_volumes(_model(), config, GIB, "uid-1")
    assert _args(_render(llama_8b, config)).node_cache_dir == node_cache.MOUNT_PATH
