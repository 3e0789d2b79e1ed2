"""Accelerator catalog: one row per product, each with its source.

Figures are dense (no 2:4 sparsity). Memory is what the GPU reports (GPU Feature Discovery's
``nvidia.com/gpu.memory`` label, in MiB) where that is known, else the datasheet size. The
row is looked up by the ``nvidia.com/gpu.product`` label; the string is matched, never parsed,
because NVIDIA's spellings are not regular (``PCIE`` vs ``PCIe``, ``Tesla-`` prefixes).
See shared/reference/hardware-and-performance.md, sections 1a-1c.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIB = 2**20
GIB = 2**30
TERA = 10**12

CPU_PRODUCT = "cpu"


class UnknownAcceleratorError(ValueError):
    """A product string that the catalog cannot size."""


@dataclass(frozen=True)
class Accelerator:
    name: str
    gfd_products: tuple[str, ...]
    memory_bytes: int
    memory_bandwidth_bytes_per_s: float
    dense_fp16_flops_per_s: float
    # None where the GPU has no bf16 (compute capability below 8.0).
    dense_bf16_flops_per_s: float | None
    compute_capability: tuple[int, int]
    source: str
    is_cpu: bool = False

    @property
    def supports_bf16(self) -> bool:
        return self.dense_bf16_flops_per_s is not None

    @property
    def compute_dtype(self) -> str:
        """The 16-bit dtype the serving engine computes in on this device."""
        if self.is_cpu:
            return "float32"
        return "bfloat16" if self.supports_bf16 else "float16"

    @property
    def dense_flops_per_s(self) -> float:
        """Peak dense FLOP/s in the compute dtype."""
        if self.dense_bf16_flops_per_s is not None:
            return self.dense_bf16_flops_per_s
        return self.dense_fp16_flops_per_s


_GFD_README = (
    "https://github.com/NVIDIA/k8s-device-plugin/blob/main/docs/gpu-feature-discovery/README.md"
)

GPUS: tuple[Accelerator, ...] = (
    Accelerator(
        name="T4",
        gfd_products=("Tesla-T4",),
        memory_bytes=15360 * MIB,
        memory_bandwidth_bytes_per_s=320e9,
        dense_fp16_flops_per_s=65 * TERA,
        dense_bf16_flops_per_s=None,
        compute_capability=(7, 5),
        source="NVIDIA T4 datasheet (via github.com/kentjliu/acml-project1); 320 GB/s "
        "sysrqmts.com; gpu.memory=15360 from GFD node dumps",
    ),
    Accelerator(
        name="A10G",
        gfd_products=("NVIDIA-A10G",),
        memory_bytes=23028 * MIB,
        memory_bandwidth_bytes_per_s=600e9,
        # NVIDIA publishes no A10G tensor figure; A10's 125 TF is an upper bound.
        dense_fp16_flops_per_s=125 * TERA,
        dense_bf16_flops_per_s=125 * TERA,
        compute_capability=(8, 6),
        source="baseten.co/blog/nvidia-a10-vs-a10g-for-ml-model-inference (24 GB, 600 GB/s); "
        "A10 datasheet 125 TF used as an upper bound (A10G unpublished)",
    ),
    Accelerator(
        name="A10",
        gfd_products=("NVIDIA-A10",),
        memory_bytes=24 * 10**9,
        memory_bandwidth_bytes_per_s=600e9,
        dense_fp16_flops_per_s=125 * TERA,
        dense_bf16_flops_per_s=125 * TERA,
        compute_capability=(8, 6),
        source="NVIDIA A10 datasheet via github.com/astroC86/gpu-datasheet",
    ),
    Accelerator(
        name="L4",
        gfd_products=("NVIDIA-L4",),
        memory_bytes=23034 * MIB,
        memory_bandwidth_bytes_per_s=300e9,
        dense_fp16_flops_per_s=121 * TERA,
        dense_bf16_flops_per_s=121 * TERA,
        compute_capability=(8, 9),
        source="github.com/winston-zhang-orz/gpu-specs (121 dense); fpsbench.com (300 GB/s)",
    ),
    Accelerator(
        name="L40S",
        gfd_products=("NVIDIA-L40S",),
        memory_bytes=46068 * MIB,
        memory_bandwidth_bytes_per_s=864e9,
        dense_fp16_flops_per_s=362.05 * TERA,
        dense_bf16_flops_per_s=362.05 * TERA,
        compute_capability=(8, 9),
        source="L40S datasheet table mirrored at mullet.se/product.html?product_id=355414",
    ),
    Accelerator(
        name="A100-40GB-PCIe",
        gfd_products=("NVIDIA-A100-PCIE-40GB", "A100-PCIE-40GB"),
        memory_bytes=40960 * MIB,
        memory_bandwidth_bytes_per_s=1555e9,
        dense_fp16_flops_per_s=312 * TERA,
        dense_bf16_flops_per_s=312 * TERA,
        compute_capability=(8, 0),
        source="thundercompute.com/blog/nvidia-a100-specs-full-guide; "
        "glennklockwood.com/garden/processors/A100 (NVIDIA A100 datasheet)",
    ),
    Accelerator(
        name="A100-40GB-SXM4",
        gfd_products=("NVIDIA-A100-SXM4-40GB", "A100-SXM4-40GB"),
        memory_bytes=40960 * MIB,
        memory_bandwidth_bytes_per_s=1555e9,
        dense_fp16_flops_per_s=312 * TERA,
        dense_bf16_flops_per_s=312 * TERA,
        compute_capability=(8, 0),
        source="thundercompute.com/blog/nvidia-a100-specs-full-guide; " + _GFD_README,
    ),
    Accelerator(
        name="A100-80GB-SXM4",
        gfd_products=("NVIDIA-A100-SXM4-80GB",),
        memory_bytes=81920 * MIB,
        memory_bandwidth_bytes_per_s=2039e9,
        dense_fp16_flops_per_s=312 * TERA,
        dense_bf16_flops_per_s=312 * TERA,
        compute_capability=(8, 0),
        source="thundercompute.com/blog/nvidia-a100-specs-full-guide",
    ),
    Accelerator(
        name="A100-80GB-PCIe",
        gfd_products=("NVIDIA-A100-80GB-PCIe",),
        memory_bytes=81920 * MIB,
        memory_bandwidth_bytes_per_s=1935e9,
        dense_fp16_flops_per_s=312 * TERA,
        dense_bf16_flops_per_s=312 * TERA,
        compute_capability=(8, 0),
        source="thundercompute.com/blog/nvidia-a100-specs-full-guide",
    ),
    Accelerator(
        name="H100-PCIe",
        gfd_products=("NVIDIA-H100-PCIe",),
        memory_bytes=81559 * MIB,
        memory_bandwidth_bytes_per_s=2000e9,
        dense_fp16_flops_per_s=756 * TERA,
        dense_bf16_flops_per_s=756 * TERA,
        compute_capability=(9, 0),
        source="H100 datasheet mirrored at archive-lib.hpctech.co.jp/gpuproduct/nvidia-h100.html",
    ),
    Accelerator(
        name="H100-SXM5",
        gfd_products=("NVIDIA-H100-80GB-HBM3",),
        memory_bytes=81559 * MIB,
        memory_bandwidth_bytes_per_s=3350e9,
        dense_fp16_flops_per_s=989.4 * TERA,
        dense_bf16_flops_per_s=989.4 * TERA,
        compute_capability=(9, 0),
        source="glennklockwood.com/garden/processors/h100 (989.4 dense bf16); H100 datasheet "
        "(3.35 TB/s)",
    ),
    Accelerator(
        name="H100-NVL",
        gfd_products=("NVIDIA-H100-NVL",),
        memory_bytes=95830 * MIB,
        memory_bandwidth_bytes_per_s=3900e9,
        dense_fp16_flops_per_s=835 * TERA,
        dense_bf16_flops_per_s=835 * TERA,
        compute_capability=(9, 0),
        source="NVIDIA H100 NVL datasheet (94 GB, 3.9 TB/s, 1,671 TF sparse bf16)",
    ),
    Accelerator(
        name="H200",
        gfd_products=("NVIDIA-H200",),
        memory_bytes=143771 * MIB,
        memory_bandwidth_bytes_per_s=4800e9,
        dense_fp16_flops_per_s=989.4 * TERA,
        dense_bf16_flops_per_s=989.4 * TERA,
        compute_capability=(9, 0),
        source="lzwjava.github.io/nvidia-h200-gpu-specs-en (141 GB, 4.8 TB/s); "
        "gpu.memory=143771 from a GFD dump",
    ),
    Accelerator(
        name="B200",
        gfd_products=("NVIDIA-B200",),
        memory_bytes=179 * 10**9,
        memory_bandwidth_bytes_per_s=8000e9,
        dense_fp16_flops_per_s=2250 * TERA,
        dense_bf16_flops_per_s=2250 * TERA,
        compute_capability=(10, 0),
        source="glennklockwood.com/garden/processors/B200; 179 GB measured per "
        "docs.vultr.com/inference-cookbook/cuda/getting-started/hardware-overview",
    ),
    Accelerator(
        name="GB200",
        gfd_products=("NVIDIA-GB200",),
        memory_bytes=186 * 10**9,
        memory_bandwidth_bytes_per_s=8000e9,
        dense_fp16_flops_per_s=2500 * TERA,
        dense_bf16_flops_per_s=2500 * TERA,
        compute_capability=(10, 0),
        source="glennklockwood.com/garden/processors/B200 (GB200 column); 13.4 TB / 72 GPUs",
    ),
)

# A generic x86 server socket for CPU-only pools (tiny models, tests, `ridgeline serve` on a
# laptop). Orders of magnitude: AVX2 FMA fp32 at ~2.5 GHz on 16 cores, dual-channel DDR4/5.
CPU = Accelerator(
    name="CPU",
    gfd_products=(CPU_PRODUCT,),
    memory_bytes=16 * GIB,
    memory_bandwidth_bytes_per_s=20e9,
    dense_fp16_flops_per_s=1 * TERA,
    dense_bf16_flops_per_s=None,
    compute_capability=(0, 0),
    source="estimate: 16 cores x 32 fp32 FLOP/cycle x 2.5 GHz; 2-channel DDR at ~20 GB/s",
    is_cpu=True,
)

_BY_PRODUCT: dict[str, Accelerator] = {
    p.lower(): gpu for gpu in (*GPUS, CPU) for p in gpu.gfd_products
}

_MIG_SUFFIX = re.compile(r"-MIG-(\d+g\.\d+gb)$", re.IGNORECASE)
_SHARED_SUFFIX = re.compile(r"-SHARED$", re.IGNORECASE)


@dataclass(frozen=True)
class ProductMatch:
    accelerator: Accelerator
    shared: bool


def lookup(product: str) -> ProductMatch:
    """Find the catalog row for a ``nvidia.com/gpu.product`` value.

    ``-SHARED`` (time-slicing or MPS) is understood: same silicon, shared by several pods.
    MIG slices are refused: a slice has a fraction of the memory and bandwidth that this
    catalog cannot infer from the name alone.
    """
    text = product.strip()
    mig = _MIG_SUFFIX.search(text)
    if mig:
        raise UnknownAcceleratorError(
            f"GPU product {product!r} is a MIG slice ({mig.group(1)}); Ridgeline plans on whole "
            "GPUs only: use a node pool without MIG, or the mixed MIG strategy for other pods"
        )
    shared = bool(_SHARED_SUFFIX.search(text))
    if shared:
        text = _SHARED_SUFFIX.sub("", text)
    row = _BY_PRODUCT.get(text.lower())
    if row is None:
        known = ", ".join(sorted(p for gpu in GPUS for p in gpu.gfd_products))
        raise UnknownAcceleratorError(
            f"unknown GPU product {product!r}: not in Ridgeline's catalog. Known products: "
            f"{known}, or 'cpu'"
        )
    return ProductMatch(accelerator=row, shared=shared)


def cpu_accelerator(memory_bytes: int, cores: int) -> Accelerator:
    """A CPU 'device' sized for a given machine (the local machine, or a declared CPU pool)."""
    per_core_flops_per_s = CPU.dense_fp16_flops_per_s / 16
    return Accelerator(
        name="CPU",
        gfd_products=(CPU_PRODUCT,),
        memory_bytes=memory_bytes,
        memory_bandwidth_bytes_per_s=CPU.memory_bandwidth_bytes_per_s,
        dense_fp16_flops_per_s=per_core_flops_per_s * max(1, cores),
        dense_bf16_flops_per_s=None,
        compute_capability=(0, 0),
        source=CPU.source + f"; sized to {cores} cores and {memory_bytes / GIB:.1f} GiB",
        is_cpu=True,
    )
