"""The operator's configuration (the chart's `config` values, mounted as a file): the serving
image catalog, declared node pools, and the shape of the pods it renders."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from ridgeline.errors import format_validation_error
from ridgeline.planner.pools import NodePool


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


class PlatformConfig(_Config):
    images: list[ServingImage] = Field(min_length=1)
    node_pools: list[NodePool] = Field(
        default_factory=list, description="Pools that may have no nodes now (scale from zero)."
    )
    minor_version_compatibility: bool = Field(
        default=False,
        description="Allow CUDA minor-version compatibility (an older driver of the same major).",
    )
    ray_version: str = "2.60.0"
    head_image: str | None = Field(default=None, description="Defaults to the chosen image.")
    head_resources: PodResources = Field(default_factory=PodResources)
    # CPU and memory of a GPU worker per GPU it holds.
    worker_cpu_per_gpu: int = 8
    worker_memory_gib_per_gpu: int = 64
    cpu_worker_resources: PodResources = Field(
        default_factory=lambda: PodResources(cpu="4", memory="16Gi")
    )
    weights_cache_dir: str = "/var/cache/ridgeline/models"
    # hostPath: one download per node, shared by its replicas (the directory must be writable
    # by uid 1000 on the nodes); emptyDir: per pod, for clusters that forbid hostPath.
    weights_cache_volume: Literal["hostPath", "emptyDir"] = "hostPath"
    serve_port: int = 8000
    gpu_tolerations: list[dict[str, str]] = Field(
        default_factory=lambda: [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    )


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


def load_platform_config(path: Path) -> PlatformConfig:
    try:
        return PlatformConfig.model_validate(yaml.safe_load(path.read_text()))
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid config:\n{format_validation_error(exc)}") from exc
