"""Pick the serving image a pool's driver runs, and what its GPUs can compute."""

from __future__ import annotations

from ridgeline.api.inference_model import Placement, Quantization
from ridgeline.compat.cuda_driver import driver_supports, parse_version, release
from ridgeline.hardware import Accelerator
from ridgeline.planner.pools import NodePool
from ridgeline.platform_config import PlatformConfig, ServingImage

# bitsandbytes' CUDA kernels: LLM.int8 needs int8 tensor-core matmul (Turing, 7.5+); its NF4
# kernels run from compute capability 5.0 but Ridgeline supports only GPUs of its catalog.
BNB_MIN_CAPABILITY = {Quantization.INT8: (7, 5), Quantization.NF4: (7, 0)}


class IncompatibleError(ValueError):
    pass


def check_quantization(acc: Accelerator, quantization: Quantization) -> None:
    need = BNB_MIN_CAPABILITY.get(quantization)
    if need and not acc.is_cpu and acc.compute_capability < need:
        have = ".".join(map(str, acc.compute_capability))
        raise IncompatibleError(
            f"bitsandbytes {quantization.value} needs compute capability "
            f"{need[0]}.{need[1]}+, {acc.name} has {have}"
        )


def choose_image(config: PlatformConfig, pool: NodePool, quantization: Quantization) -> Placement:
    """The newest image whose CUDA the pool's driver runs (strict unless the config opts in to
    minor-version compatibility)."""
    check_quantization(pool.accelerator(), quantization)
    if pool.is_cpu:
        cpu = [i for i in config.images if i.cuda is None]
        if not cpu:
            raise IncompatibleError("the image catalog has no CPU image (an entry without cuda)")
        return Placement(image=cpu[0].image, torch_version=cpu[0].torch, node_pool=pool.name)
    if not pool.driver_version:
        raise IncompatibleError(f"pool {pool.name} declares no driverVersion")
    gpu_images = [i for i in config.images if i.cuda]
    fitting = [
        i
        for i in gpu_images
        if driver_supports(pool.driver_version, i.cuda or "", config.minor_version_compatibility)
    ]
    if not fitting:
        needs = ", ".join(
            f"{i.cuda} needs >= {_min_driver(i, config)}" for i in sorted(gpu_images, key=_cuda_key)
        )
        raise IncompatibleError(
            f"driver {pool.driver_version} on pool {pool.name} runs none of the serving images "
            f"(CUDA {needs}); upgrade the driver or add an image built for an older CUDA"
        )
    best = max(fitting, key=_cuda_key)
    return Placement(
        image=best.image,
        cuda_version=best.cuda,
        torch_version=best.torch,
        min_driver=_min_driver(best, config),
        node_pool=pool.name,
    )


def _cuda_key(image: ServingImage) -> tuple[int, ...]:
    return parse_version(image.cuda or "0")


def _min_driver(image: ServingImage, config: PlatformConfig) -> str:
    rel = release(image.cuda or "")
    return rel.min_driver_minor_compat if config.minor_version_compatibility else rel.min_driver
