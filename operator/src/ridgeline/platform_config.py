"""The operator's configuration (the chart's `config` values, mounted as a file): the serving
image catalog, declared node pools, and the shape of the pods it renders."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from ridgeline.api.node_cache import DEFAULT_ROOT
from ridgeline.instance_shapes import products, smallest_per_gpu
from ridgeline.node_prices import NodePrices
from ridgeline.planner.pools import NodePool
from ridgeline.quantity import parse_quantity


class _Config(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ServingImage(_Config):
    """One serving image: built from images/serving with this CUDA and torch."""

    image: str = Field(min_length=1)
    cuda: str | None = Field(default=None, description="CUDA version; None for the CPU image.")
    torch: str = Field(description="torch version inside the image.")


class PodResources(_Config):
    cpu: str = "2"
    memory: str = "8Gi"


class PeerSelector(_Config):
    """A NetworkPolicy peer: pods matching ``podSelector`` in namespaces matching
    ``namespaceSelector`` (an empty selector matches all)."""

    namespace_selector: dict[str, Any] = Field(default_factory=dict)
    pod_selector: dict[str, Any] = Field(default_factory=dict)


class NetworkPolicyConfig(_Config):
    enabled: bool = Field(
        default=True,
        description="Render a NetworkPolicy per model: only the serve port is open to other pods.",
    )
    kuberay_operator: PeerSelector = Field(
        default_factory=lambda: PeerSelector(
            pod_selector={"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}}
        ),
        description="The KubeRay operator's pods: they reach the head's dashboard port "
        "(Serve status and config).",
    )
    metrics_from: list[PeerSelector] = Field(
        default_factory=list,
        description="Who may scrape the serving pods' metrics port (e.g. Prometheus).",
    )


class NodeCacheConfig(_Config):
    """The node weight cache (chart values ``nodeCache``): an agent on each node fills a host
    directory with the checkpoints of the models planned on it, and worker pods mount their
    checkpoint's directory read-only through a PersistentVolume."""

    enabled: bool = Field(default=False, description="Render the node cache's volumes.")
    host_path: str = Field(
        default=DEFAULT_ROOT,
        pattern=r"^/",
        description="The node root: a host directory, one subdirectory per checkpoint.",
    )
    size_budget: int = Field(
        default=0,
        ge=0,
        description="Bytes the agent may fill per node (a quantity such as 500Gi is read as "
        "bytes); 0: the disk's free space.",
    )
    grace_period_seconds: int = Field(
        default=3600, ge=0, description="How long an unneeded checkpoint stays before deletion."
    )
    image: str | None = Field(
        default=None,
        description="The agent's image (the chart sets it): a node it runs on has that image, "
        "so a replica running the same one pulls nothing (the planner's cold start says so).",
    )
    namespace: str = Field(
        default="",
        description="The agents' namespace, where their report ConfigMaps are (the chart sets "
        "the operator's own); required when enabled.",
    )

    @field_validator("size_budget", mode="before")
    @classmethod
    def _quantity(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return int(parse_quantity(value))
            except ValueError:
                raise ValueError(f"sizeBudget {value!r} is not a byte count or quantity") from None
        return value

    @model_validator(mode="after")
    def _namespace(self) -> NodeCacheConfig:
        if self.enabled and not self.namespace:
            raise ValueError("nodeCache.namespace (the agents' namespace) is required when enabled")
        return self


class PlatformConfig(_Config):
    images: list[ServingImage] = Field(min_length=1)
    node_pools: list[NodePool] = Field(
        default_factory=list, description="Pools that may have no nodes now (scale from zero)."
    )
    node_prices: NodePrices = Field(
        default_factory=NodePrices,
        description="Prices of discovered pools (and of declared ones without their own "
        "pricePerNodeHour): by instance type, else by GPU product.",
    )
    minor_version_compatibility: bool = Field(
        default=False,
        description="Allow CUDA minor-version compatibility (an older driver of the same major).",
    )
    ray_version: str = "2.60.0"
    head_image: str | None = Field(default=None, description="Defaults to the chosen image.")
    head_resources: PodResources = Field(default_factory=PodResources)
    head_node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node selector of the Ray head pods (e.g. a CPU node pool's label).",
    )
    head_tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Tolerations of the Ray head pods (beside tolerations)."
    )
    # The most CPU and memory a GPU worker asks per GPU it holds; less where the pool's nodes
    # have less to give (their allocatable, times allocatable_fraction, shared by GPU count).
    worker_cpu_per_gpu: int = Field(default=8, ge=1)
    worker_memory_gib_per_gpu: int = Field(default=64, ge=1, alias="workerMemoryGiBPerGpu")
    allocatable_fraction: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="Share of a node's allocatable CPU and memory a model's pods may request; "
        "the rest is left for DaemonSets (device plugin, GFD, exporters).",
    )
    cpu_worker_resources: PodResources = Field(
        default_factory=lambda: PodResources(cpu="4", memory="16Gi")
    )
    weights_cache_dir: str = "/var/cache/ridgeline/models"
    # emptyDir: per pod, on the node's ephemeral storage, requested at the checkpoint's size
    # (works under Pod Security "restricted"); hostPath: one download per node, shared by its
    # replicas, made writable by a root init container (needs the "privileged" level).
    weights_cache_volume: Literal["emptyDir", "hostPath"] = "emptyDir"
    serve_port: int = Field(default=8000, ge=1, le=65535)
    runtime_class_name: str | None = Field(
        default=None,
        min_length=1,
        description="RuntimeClass of the GPU worker pods (e.g. nvidia where the NVIDIA runtime "
        "is not containerd's default: the standalone device plugin on k3s or RKE2).",
    )
    gpu_tolerations: list[dict[str, Any]] = Field(
        default_factory=lambda: [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Tolerations of every model pod (head and workers)."
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Secrets (in the model's namespace) to pull images."
    )
    upgrade_strategy: Literal["Recreate", "NewCluster"] = Field(
        default="Recreate",
        description="Recreate: a change to the pods replaces the RayCluster in place (no second "
        "set of GPUs, a restart's downtime). NewCluster: KubeRay's blue/green upgrade (needs "
        "twice the GPUs during the upgrade, no downtime).",
    )
    ray_token_auth: bool = Field(
        default=True,
        description="Ray token authentication with a per-model Secret the operator creates.",
    )
    network_policy: NetworkPolicyConfig = Field(default_factory=NetworkPolicyConfig)
    node_cache: NodeCacheConfig = Field(default_factory=NodeCacheConfig)

    @field_validator("node_pools")
    @classmethod
    def _sized(cls, pools: list[NodePool]) -> list[NodePool]:
        """A declared GPU pool's pods are sized from its nodes' CPUs and memory, or else from
        the smallest instance shape of its GPU: a product without one must say its size."""
        for pool in pools:
            unsized = pool.cpus is None or pool.memory_gib is None
            if not pool.is_cpu and unsized and smallest_per_gpu(pool.gpu_product) is None:
                raise ValueError(
                    f"pool {pool.name}: add cpus and memoryGiB (a node's allocatable CPUs and "
                    f"memory in GiB): Ridgeline knows no instance shape of {pool.gpu_product} "
                    f"to size its pods from (it knows {', '.join(products())})"
                )
        return pools


# The images `make images` builds (images/serving, one per CUDA version): the chart's default
# catalog and `ridgeline render`'s when no --config is given.
DEFAULT_IMAGES = [
    ServingImage(image="ghcr.io/ridgeline/serving:0.1.0-cu124", cuda="12.4", torch="2.6.0"),
    ServingImage(image="ghcr.io/ridgeline/serving:0.1.0-cu128", cuda="12.8", torch="2.9.1"),
    ServingImage(image="ghcr.io/ridgeline/serving:0.1.0-cu130", cuda="13.0", torch="2.15.0"),
    ServingImage(image="ghcr.io/ridgeline/serving:0.1.0-cpu", cuda=None, torch="2.15.0"),
]


def default_config() -> PlatformConfig:
    return PlatformConfig(images=list(DEFAULT_IMAGES))


class ConfigError(ValueError):
    pass
