"""Compatibility tables: which CUDA a driver runs, what a GPU's compute capability allows."""

from ridgeline.compat.cuda_driver import (
    CUDA_RELEASES,
    CudaRelease,
    driver_supports,
    max_cuda_for_driver,
    parse_version,
)
from ridgeline.compat.images import IncompatibleError, check_quantization, choose_image

__all__ = [
    "CUDA_RELEASES",
    "CudaRelease",
    "IncompatibleError",
    "check_quantization",
    "choose_image",
    "driver_supports",
    "max_cuda_for_driver",
    "parse_version",
]
