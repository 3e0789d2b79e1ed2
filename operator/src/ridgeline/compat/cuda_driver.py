"""CUDA toolkit -> minimum Linux x86_64 driver.

Source: Table 3 of https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/index.html (GA
release of each toolkit), and for minor-version compatibility
https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html
(shared/reference/hardware-and-performance.md, section 2a).
"""

from __future__ import annotations

from dataclasses import dataclass

Version = tuple[int, ...]


def parse_version(text: str) -> Version:
    try:
        return tuple(int(p) for p in text.strip().split("."))
    except ValueError:
        raise ValueError(f"not a dotted version: {text!r}") from None


@dataclass(frozen=True)
class CudaRelease:
    cuda: str
    min_driver: str  # toolkit driver, GA
    # Lowest driver under minor-version compatibility (same CUDA major, limited feature set).
    min_driver_minor_compat: str


CUDA_RELEASES: tuple[CudaRelease, ...] = (
    CudaRelease("11.8", "520.61.05", "450.80.02"),
    CudaRelease("12.0", "525.60.13", "525.60.13"),
    CudaRelease("12.1", "530.30.02", "525.60.13"),
    CudaRelease("12.2", "535.54.03", "525.60.13"),
    CudaRelease("12.3", "545.23.06", "525.60.13"),
    CudaRelease("12.4", "550.54.14", "525.60.13"),
    CudaRelease("12.5", "555.42.02", "525.60.13"),
    CudaRelease("12.6", "560.28.03", "525.60.13"),
    CudaRelease("12.8", "570.26", "525.60.13"),
    CudaRelease("12.9", "575.51.03", "525.60.13"),
    CudaRelease("13.0", "580.65.06", "580.65.06"),
    CudaRelease("13.1", "590.44.01", "580.65.06"),
    CudaRelease("13.2", "595.45.04", "580.65.06"),
)
_BY_CUDA = {r.cuda: r for r in CUDA_RELEASES}


def release(cuda: str) -> CudaRelease:
    major_minor = ".".join(cuda.split(".")[:2])
    if major_minor not in _BY_CUDA:
        known = ", ".join(_BY_CUDA)
        raise ValueError(f"unknown CUDA version {cuda!r}; known: {known}")
    return _BY_CUDA[major_minor]


def driver_supports(driver: str, cuda: str, minor_version_compat: bool = False) -> bool:
    rel = release(cuda)
    needed = rel.min_driver_minor_compat if minor_version_compat else rel.min_driver
    return parse_version(driver) >= parse_version(needed)


def max_cuda_for_driver(driver: str) -> str | None:
    """Highest CUDA the driver runs natively (GFD's cuda.runtime-version)."""
    best = None
    for rel in CUDA_RELEASES:
        if parse_version(driver) >= parse_version(rel.min_driver):
            best = rel.cuda
    return best
