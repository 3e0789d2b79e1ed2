"""A fake GPU fleet: Node objects with the labels GPU Feature Discovery puts on real nodes,
``nvidia.com/gpu`` capacity and the usual GPU taint, kept Ready by kwok."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

from ridgeline.compat import max_cuda_for_driver
from ridgeline.config_files import load_pools
from ridgeline.hardware import GIB, MIB, lookup
from ridgeline.planner import NodePool

FAKE = {"kwok.x-k8s.io/node": "fake"}
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
POOL_LABEL = "ridgeline.dev/fake-pool"
FAMILIES = {
    (7, 5): "turing",
    (8, 0): "ampere",
    (8, 6): "ampere",
    (8, 9): "ada-lovelace",
    (9, 0): "hopper",
    (10, 0): "blackwell",
}


def gfd_labels(pool: NodePool) -> dict[str, str]:
    # GFD reports the physical GPU; a time-sliced one also says how many replicas share it.
    acc = lookup(pool.gpu_product).accelerator
    labels = {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": pool.gpu_product,
        "nvidia.com/gpu.count": str(pool.gpus_per_node),
        "nvidia.com/gpu.memory": str(pool.gpu_memory_mib or acc.memory_bytes // MIB),
        "nvidia.com/gpu.compute.major": str(acc.compute_capability[0]),
        "nvidia.com/gpu.compute.minor": str(acc.compute_capability[1]),
        "nvidia.com/gpu.family": FAMILIES.get(acc.compute_capability, "unknown"),
        "nvidia.com/mig.capable": "false",
    }
    if pool.shared_by:
        labels |= {
            "nvidia.com/gpu.replicas": str(pool.shared_by),
            "nvidia.com/gpu.sharing-strategy": "time-slicing",
        }
    if pool.driver_version:
        parts = [*pool.driver_version.split("."), "0"][:3]
        labels |= {
            "nvidia.com/cuda.driver-version.major": parts[0],
            "nvidia.com/cuda.driver-version.minor": parts[1],
            "nvidia.com/cuda.driver-version.revision": parts[2],
            "nvidia.com/cuda.driver-version.full": pool.driver_version,
            # deprecated keys, still emitted by GFD
            "nvidia.com/cuda.driver.major": parts[0],
            "nvidia.com/cuda.driver.minor": parts[1],
            "nvidia.com/cuda.driver.rev": parts[2],
        }
        cuda = max_cuda_for_driver(pool.driver_version)
        if cuda:
            major, minor = cuda.split(".")
            labels |= {
                "nvidia.com/cuda.runtime-version.major": major,
                "nvidia.com/cuda.runtime-version.minor": minor,
                "nvidia.com/cuda.runtime-version.full": cuda,
                "nvidia.com/cuda.runtime.major": major,
                "nvidia.com/cuda.runtime.minor": minor,
            }
    return labels


def node_manifests(pools: list[NodePool]) -> list[dict[str, Any]]:
    nodes = []
    for pool in pools:
        cpus = pool.cpus or (8 if pool.is_cpu else 16 * max(1, pool.gpus_per_node))
        memory_gib = pool.memory_gib or (16 if pool.is_cpu else 128 * max(1, pool.gpus_per_node))
        capacity = {
            "cpu": str(cpus),
            "memory": f"{int(memory_gib * GIB // MIB)}Mi",
            "ephemeral-storage": "2000Gi",
            "pods": "110",
        }
        labels = {POOL_LABEL: pool.name, "type": "kwok"}
        taints: list[dict[str, str]] = []
        if not pool.is_cpu:
            capacity["nvidia.com/gpu"] = str(pool.gpus_per_node)
            labels |= gfd_labels(pool)
            taints = [GPU_TAINT]
        for i in range(pool.nodes):
            name = f"{pool.name}-{i}"
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": dict(FAKE),
                        "labels": {**labels, "kubernetes.io/hostname": name},
                    },
                    "spec": {"taints": taints},
                    "status": {"capacity": capacity, "allocatable": capacity},
                }
            )
    return nodes


def apply(pools: list[NodePool], kubectl: list[str]) -> list[str]:
    """Create the nodes, then set their capacity through the status subresource."""
    manifests = node_manifests(pools)
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests})
    subprocess.run(
        [*kubectl, "apply", "-f", "-"], input=doc, text=True, check=True, capture_output=True
    )
    for node in manifests:
        patch = json.dumps({"status": node["status"]})
        subprocess.run(
            [
                *kubectl,
                "patch",
                "node",
                node["metadata"]["name"],
                "--subresource=status",
                "--type=merge",
                "-p",
                patch,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    return [n["metadata"]["name"] for n in manifests]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ridgeline-dev fleet")
    parser.add_argument("pools", type=Path, help="POOLS.yaml (with `nodes` per pool)")
    parser.add_argument("--kubeconfig", help="defaults to $KUBECONFIG")
    parser.add_argument("--kubectl", default="kubectl")
    parser.add_argument("--dry-run", action="store_true", help="print the Node manifests")
    args = parser.parse_args(argv)
    pools = load_pools(args.pools)
    if args.dry_run:
        print(json.dumps(node_manifests(pools), indent=2))
        return 0
    kubectl = [args.kubectl] + (["--kubeconfig", args.kubeconfig] if args.kubeconfig else [])
    names = apply(pools, kubectl)
    print(f"created {len(names)} fake nodes: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
