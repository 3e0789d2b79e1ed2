"""Common cloud instance shapes per GPU product, to size the pods of a declared pool that does
not say its nodes' CPUs and memory: the smallest shape of the product, per GPU, less what the
kubelet keeps for itself. A pod sized from it fits on every shape listed for its GPU."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ridgeline.hardware import UnknownAcceleratorError, lookup

_AWS = "https://aws.amazon.com/ec2/instance-types/"
_GCP = "https://cloud.google.com/compute/docs/gpus"
_AZURE = "https://learn.microsoft.com/azure/virtual-machines/sizes/gpu-accelerated/"


@dataclass(frozen=True)
class Shape:
    name: str
    gpus: int
    vcpus: int
    memory_gib: float
    source: str


# Keyed by the catalog's accelerator name (hardware.py), smallest shapes of each cloud. GCP's
# "GB" of machine memory are GiB.
SHAPES: dict[str, tuple[Shape, ...]] = {
    "L4": (
        Shape("GKE g2-standard-4", 1, 4, 16, _GCP + "#l4-gpus"),
        Shape("AWS g6.xlarge", 1, 4, 16, _AWS + "g6/"),
    ),
    "L40S": (Shape("AWS g6e.xlarge", 1, 4, 32, _AWS + "g6e/"),),
    "A10G": (Shape("AWS g5.xlarge", 1, 4, 16, _AWS + "g5/"),),
    "A100-40GB-SXM4": (
        Shape("GKE a2-highgpu-1g", 1, 12, 85, _GCP + "#a100-gpus"),
        Shape("AWS p4d.24xlarge", 8, 96, 1152, _AWS + "p4/"),
        Shape("Azure ND96asr_v4", 8, 96, 900, _AZURE + "ndasra100v4-series"),
    ),
    "A100-80GB-SXM4": (
        Shape("GKE a2-ultragpu-1g", 1, 12, 170, _GCP + "#a100-gpus"),
        Shape("AWS p4de.24xlarge", 8, 96, 1152, _AWS + "p4/"),
        Shape("Azure ND96amsr_A100_v4", 8, 96, 1900, _AZURE + "ndma100v4-series"),
    ),
    "H100-SXM5": (
        Shape("GKE a3-highgpu-1g", 1, 26, 234, _GCP + "#h100-gpus"),
        Shape("AWS p5.48xlarge", 8, 192, 2048, _AWS + "p5/"),
        Shape("Azure ND96isr_H100_v5", 8, 96, 1900, _AZURE + "ndh100v5-series"),
    ),
    "H200": (
        Shape("GKE a3-ultragpu-8g", 8, 224, 2952, _GCP + "#h200-gpus"),
        Shape("AWS p5e.48xlarge", 8, 192, 2048, _AWS + "p5/"),
        Shape("Azure ND96isr_H200_v5", 8, 96, 1850, _AZURE + "nd-h200-v5-series"),
    ),
}

# Memory the kubelet keeps (kube-reserved) as GKE and AKS size it: 25% of the first 4 GiB,
# 20% of the next 4, 10% of the next 8, 6% of the next 112, 2% above 128 GiB
# (cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes; the largest of the three
# clouds': EKS keeps 255 MiB + 11 MiB per pod), plus AKS's 750 MiB hard eviction threshold.
_MEMORY_RESERVE = ((4, 0.25), (4, 0.20), (8, 0.10), (112, 0.06), (math.inf, 0.02))
_EVICTION_GIB = 750 / 1024
# CPU: 6% of the first core, 1% of the next, 0.5% of the next 2, 0.25% above 4 (GKE and EKS).
_CPU_RESERVE = ((1, 0.06), (1, 0.01), (2, 0.005), (math.inf, 0.0025))


def _reserved(amount: float, table: tuple[tuple[float, float], ...]) -> float:
    reserved, left = 0.0, amount
    for size, share in table:
        step = min(left, size)
        reserved += step * share
        left -= step
        if left <= 0:
            break
    return reserved


@dataclass(frozen=True)
class PerGpu:
    """Allocatable CPUs and memory per GPU on the smallest shape, and that shape's name."""

    cpus: float
    memory_gib: float
    shape: str


def _per_gpu(shape: Shape) -> PerGpu:
    cpus = shape.vcpus - _reserved(shape.vcpus, _CPU_RESERVE)
    memory = shape.memory_gib - _reserved(shape.memory_gib, _MEMORY_RESERVE) - _EVICTION_GIB
    return PerGpu(cpus / shape.gpus, memory / shape.gpus, shape.name)


def smallest_per_gpu(product: str) -> PerGpu | None:
    """The least CPU and the least memory per GPU over the shapes of ``product`` (each from its
    own shape); None for a product without shapes here."""
    try:
        name = lookup(product).accelerator.name
    except UnknownAcceleratorError:
        return None
    shapes = SHAPES.get(name)
    if not shapes:
        return None
    each = [_per_gpu(s) for s in shapes]
    least_cpu = min(each, key=lambda p: p.cpus)
    least_memory = min(each, key=lambda p: p.memory_gib)
    names = sorted({least_cpu.shape, least_memory.shape})
    return PerGpu(least_cpu.cpus, least_memory.memory_gib, " and ".join(names))


def products() -> list[str]:
    return sorted(SHAPES)
