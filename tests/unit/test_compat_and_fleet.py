"""CUDA/driver table and the fake fleet's GFD labels (pure; no cluster)."""

from __future__ import annotations

import pytest

from ridgeline.compat import driver_supports, max_cuda_for_driver
from ridgeline.planner import NodePool
from ridgeline_dev.fleet import GPU_TAINT, node_manifests


@pytest.mark.parametrize(
    ("driver", "cuda"),
    [
        ("550.54.15", "12.4"),
        ("535.104.05", "12.2"),
        ("580.65.06", "13.0"),
        ("570.124.06", "12.8"),
        ("470.82.01", None),
        ("525.60.13", "12.0"),
    ],
)
def test_max_cuda_for_driver(driver: str, cuda: str | None) -> None:
    assert max_cuda_for_driver(driver) == cuda


def test_minor_version_compatibility_is_opt_in() -> None:
    assert not driver_supports("535.104.05", "12.4")
    assert driver_supports("535.104.05", "12.4", minor_version_compat=True)
    assert not driver_supports("535.104.05", "13.0", minor_version_compat=True)


def test_fake_gpu_node_carries_gfd_labels_capacity_and_taint() -> None:
    pool = NodePool(
        name="h100",
        gpu_product="NVIDIA-H100-80GB-HBM3",
        gpus_per_node=8,
        driver_version="550.54.15",
        nodes=2,
    )
    nodes = node_manifests([pool])
    assert [n["metadata"]["name"] for n in nodes] == ["h100-0", "h100-1"]
    node = nodes[0]
    labels = node["metadata"]["labels"]
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels["nvidia.com/gpu.count"] == "8"
    assert labels["nvidia.com/gpu.memory"] == "81559"
    assert (labels["nvidia.com/gpu.compute.major"], labels["nvidia.com/gpu.compute.minor"]) == (
        "9",
        "0",
    )
    assert labels["nvidia.com/cuda.driver-version.full"] == "550.54.15"
    assert labels["nvidia.com/cuda.driver.rev"] == "15"
    assert labels["nvidia.com/cuda.runtime-version.full"] == "12.4"
    assert node["metadata"]["annotations"] == {"kwok.x-k8s.io/node": "fake"}
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "8"
    assert node["spec"]["taints"] == [GPU_TAINT]


def test_cpu_pool_nodes_have_no_gpu() -> None:
    node = node_manifests([NodePool(name="cpu", gpu_product="cpu", gpus_per_node=0)])[0]
    assert "nvidia.com/gpu" not in node["status"]["capacity"]
    assert node["spec"]["taints"] == []
    assert not any(k.startswith("nvidia.com/") for k in node["metadata"]["labels"])
