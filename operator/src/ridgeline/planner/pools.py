"""Node pools: a GPU product, GPUs per node and a driver. POOLS.yaml is a list of these; the
operator discovers the same shape from nodes' GPU Feature Discovery labels."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from ridgeline.errors import format_validation_error
from ridgeline.hardware import CPU_PRODUCT, Accelerator, cpu_accelerator, lookup

MIB = 2**20
GIB = 2**30


class NodePool(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    name: str = Field(min_length=1, max_length=63)
    gpu_product: str = Field(description="nvidia.com/gpu.product, or 'cpu'.")
    gpus_per_node: int = Field(ge=0, le=64)
    driver_version: str | None = Field(
        default=None, description="NVIDIA driver, e.g. 550.54.15 (None for CPU pools)."
    )
    # Upper bounds are past any real fleet; without them 10**400 overflows the float math.
    nodes: int = Field(
        default=1, ge=0, le=100_000, description="Node count (the dev fleet creates these)."
    )
    gpu_memory_mib: int | None = Field(
        default=None,
        ge=1,
        le=2**24,
        alias="gpuMemoryMiB",
        description="nvidia.com/gpu.memory; overrides the catalog's figure.",
    )
    memory_gib: float | None = Field(
        default=None,
        gt=0,
        le=2**20,
        allow_inf_nan=False,
        alias="memoryGiB",
        description="Allocatable memory per node: sizes the pods (CPU pools: default 16 GiB).",
    )
    cpus: int | None = Field(
        default=None, ge=1, le=65_536, description="Allocatable cores per node: sizes the pods."
    )
    shared_by: int | None = Field(
        default=None,
        ge=2,
        le=64,
        description="Replicas sharing one GPU (time-slicing or MPS, nvidia.com/gpu.replicas): "
        "a -SHARED product needs it, and each replica is planned on its share.",
    )
    price_per_node_hour: float | None = Field(
        default=None,
        ge=0,
        le=1e6,
        allow_inf_nan=False,
        description="A node-hour's price in the platform's currency (a cloud price list's "
        "per-instance figure): the plan's cost per million tokens, and where every allowed "
        "pool has one, the pool it chooses.",
    )
    node_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels every node of a declared pool carries from boot (its node group "
        "template's): its pods select on these, not on GPU Feature Discovery's labels, which "
        "a node gets only once it runs.",
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Tolerations for this pool's own taints (beside gpuTolerations).",
    )
    ephemeral_storage_gib: float | None = Field(
        default=None,
        gt=0,
        le=2**20,
        allow_inf_nan=False,
        alias="ephemeralStorageGiB",
        description="Allocatable ephemeral storage per node (the kubelet's disk): a weight cache "
        "that does not fit is refused.",
    )
    # What the nodes matching a declared pool's nodeLabels report against its declaration
    # (discovery.py): one sentence per disagreement; never read from a file.
    _mismatches: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _share(self) -> NodePool:
        if not self.is_cpu and self.shared and not self.shared_by:
            raise ValueError(
                f"pool {self.name}: {self.gpu_product} is a shared GPU; say how many replicas "
                "share one (sharedBy), or Ridgeline cannot plan on it"
            )
        return self

    @field_validator("driver_version")
    @classmethod
    def _driver(cls, value: str | None) -> str | None:
        if value is not None:
            parts = value.split(".")
            if not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
                raise ValueError(f"driverVersion {value!r} is not MAJOR.MINOR[.REVISION]")
        return value

    @property
    def declared_by_labels(self) -> bool:
        """A declared pool whose pods select on its nodeLabels (no GFD terms)."""
        return bool(self.node_labels)

    @property
    def mismatches(self) -> tuple[str, ...]:
        return self._mismatches

    def with_mismatches(self, mismatches: list[str]) -> NodePool:
        pool = self.model_copy()
        pool._mismatches = tuple(mismatches)
        return pool

    @property
    def is_cpu(self) -> bool:
        return self.gpu_product.strip().lower() == CPU_PRODUCT

    def accelerator(self) -> Accelerator:
        """The catalog row, with the node-reported memory where the pool gives one."""
        if self.is_cpu:
            return cpu_accelerator(int((self.memory_gib or 16) * GIB), self.cpus or 16)
        row = lookup(self.gpu_product).accelerator
        if self.gpu_memory_mib:
            row = replace(row, memory_bytes=self.gpu_memory_mib * MIB)
        if self.shared_by:
            # A time-sliced GPU gives each of its replicas a share of memory and of time.
            n = self.shared_by
            row = replace(
                row,
                memory_bytes=row.memory_bytes // n,
                dense_fp16_flops_per_s=row.dense_fp16_flops_per_s / n,
                dense_bf16_flops_per_s=(
                    row.dense_bf16_flops_per_s / n if row.dense_bf16_flops_per_s else None
                ),
                memory_bandwidth_bytes_per_s=row.memory_bandwidth_bytes_per_s / n,
            )
        return row

    @property
    def shared(self) -> bool:
        try:
            return not self.is_cpu and lookup(self.gpu_product).shared
        except ValueError:
            return False  # an unknown product: parse_pools says so


_POOLS = TypeAdapter(list[NodePool])


class PoolsFileError(ValueError):
    pass


def parse_pools(doc: object, source: str = "pools") -> list[NodePool]:
    if isinstance(doc, dict) and "pools" in doc:
        doc = doc["pools"]
    try:
        pools = _POOLS.validate_python(doc)
    except ValidationError as exc:
        raise PoolsFileError(f"{source}: invalid pools:\n{format_validation_error(exc)}") from exc
    names = [p.name for p in pools]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PoolsFileError(f"{source}: duplicate pool names {dupes}")
    for pool in pools:
        try:
            pool.accelerator()
        except ValueError as exc:
            raise PoolsFileError(f"{source}: pool {pool.name!r}: {exc}") from exc
    return pools
