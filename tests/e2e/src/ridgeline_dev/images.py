"""Container images for the real test node, built here without a daemon or a registry.

buildah (chroot isolation, its own storage under the cache) builds:
- ``ridgeline/debian:bookworm``: a ``debootstrap --variant=minbase`` root filesystem, the base the
  published images take from Docker Hub's ``debian:bookworm-slim``;
- ``ridgeline/pause``: Debian's static ``catatonit -P``, the sandbox image containerd runs;
- the operator and the CPU serving image, from the Dockerfiles in ``images/`` with build args.

Each image is saved as a docker-archive named by a hash of everything it is built from, so a
second run imports the cached archive and rebuilds only what changed. pip inside a build reaches
PyPI with the host's CA bundle (``$PIP_CERT``) given as a build secret: it is never in a layer.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ridgeline_dev.toolchain import cache_root

REPO = Path(__file__).resolve().parents[4]
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SUITE = "bookworm"
BASE_IMAGE = "localhost/ridgeline/debian:bookworm"
PAUSE_IMAGE = "localhost/ridgeline/pause:catatonit"
# What the Dockerfiles copy from the repository: a change to any of it rebuilds the image.
SOURCES = (
    "pyproject.toml",
    "README.md",
    "operator/src",
    "serving/src",
    "images/serving/constraints.txt",
)


@dataclass(frozen=True)
class ImageSpec:
    name: str  # the image reference in containerd
    dockerfile: str  # relative to the repository
    build_args: dict[str, str] = field(default_factory=dict)

    def key(self) -> str:
        digest = hashlib.sha256()
        digest.update(self.name.encode())
        digest.update(sorted(self.build_args.items()).__repr__().encode())
        digest.update((REPO / self.dockerfile).read_bytes())
        digest.update(_base_key().encode())
        for path in _source_files():
            digest.update(str(path.relative_to(REPO)).encode())
            digest.update(path.read_bytes())
        return digest.hexdigest()[:16]


def operator_image() -> ImageSpec:
    return ImageSpec(
        "localhost/ridgeline/operator:dev", "images/operator/Dockerfile", {"BASE": BASE_IMAGE}
    )


def serving_image() -> ImageSpec:
    # PyPI's torch runs on the CPU (no CPU index is reachable from these machines).
    return ImageSpec(
        "localhost/ridgeline/serving:dev-cpu",
        "images/serving/Dockerfile",
        {"BASE": BASE_IMAGE, "TORCH_INDEX": "pypi"},
    )


class ImageError(RuntimeError):
    pass


def images_dir() -> Path:
    return cache_root() / "images"


def containerd_root() -> Path:
    """containerd's root (content and snapshots), kept between clusters like the archives."""
    return cache_root() / "containerd" / "root"


def _source_files() -> list[Path]:
    files: list[Path] = []
    for source in SOURCES:
        path = REPO / source
        if path.is_file():
            files.append(path)
        else:
            files.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")
            )
    return files


def _base_key() -> str:
    return hashlib.sha256(f"{DEBIAN_MIRROR} {DEBIAN_SUITE} minbase".encode()).hexdigest()[:12]


def _buildah(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    store = cache_root() / "buildah"
    argv = [
        "buildah",
        "--root",
        str(store / "root"),
        "--runroot",
        str(store / "run"),
        "--storage-driver",
        "overlay",
        *args,
    ]
    env = {**os.environ, "BUILDAH_ISOLATION": "chroot"}
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise ImageError(f"buildah {' '.join(args[:3])} failed:\n{result.stderr[-4000:]}")
    return result


def _stage(what: str, started: float) -> None:
    print(f"[images] {what} in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)


def _archive(name: str, key: str) -> Path:
    return images_dir() / f"{name.rsplit('/', 1)[-1].replace(':', '-')}-{key}.tar"


def _save(name: str, key: str) -> Path:
    out = _archive(name, key)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    _buildah("push", name, f"docker-archive:{tmp}:{name}")
    tmp.rename(out)
    for stale in out.parent.glob(out.name.removesuffix(f"-{key}.tar") + "-*.tar"):
        if stale != out:
            stale.unlink()
    # The previous build of this tag is now dangling in buildah's store (gigabytes for the
    # serving image): drop it, or every source change leaves one behind.
    _buildah("rmi", "--prune", check=False)
    return out


def _has_image(name: str) -> bool:
    return _buildah("inspect", "--type", "image", name, check=False).returncode == 0


def base() -> str:
    """The Debian base image in buildah's store (debootstrap once, then cached)."""
    marker = cache_root() / "buildah" / f"base-{_base_key()}"
    if marker.exists() and _has_image(BASE_IMAGE):
        return BASE_IMAGE
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=cache_root()) as rootfs:
        subprocess.run(
            ["debootstrap", "--variant=minbase", DEBIAN_SUITE, rootfs, DEBIAN_MIRROR],
            check=True,
            capture_output=True,
        )
        # No package lists or caches in the image; apt-get update fetches them.
        for sub in ("var/lib/apt/lists", "var/cache/apt/archives"):
            for entry in (Path(rootfs) / sub).glob("*"):
                if entry.is_file():
                    entry.unlink()
        container = _buildah("from", "scratch").stdout.strip()
        try:
            _buildah("copy", container, f"{rootfs}/", "/")
            _buildah("config", "--cmd", "/bin/bash", container)
            _buildah("commit", "--rm", container, BASE_IMAGE)
        except ImageError:
            _buildah("rm", container, check=False)
            raise
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    _stage(f"base {BASE_IMAGE} (debootstrap {DEBIAN_SUITE} minbase)", started)
    return BASE_IMAGE


def pause() -> Path:
    """The sandbox image: Debian's statically linked catatonit in pause mode, nothing else."""
    catatonit = shutil.which("catatonit")
    if catatonit is None:
        raise ImageError("catatonit is missing (tests/e2e/ensure-node.sh installs it)")
    key = hashlib.sha256(Path(catatonit).read_bytes()).hexdigest()[:16]
    out = _archive(PAUSE_IMAGE, key)
    if out.exists():
        return out
    container = _buildah("from", "scratch").stdout.strip()
    _buildah("copy", "--chmod", "0755", container, catatonit, "/pause")
    _buildah("config", "--entrypoint", '["/pause", "-P"]', "--user", "65535:65535", container)
    _buildah("commit", "--rm", container, PAUSE_IMAGE)
    return _save(PAUSE_IMAGE, key)


def build(spec: ImageSpec) -> Path:
    """The image's docker-archive, built unless one for the same inputs is cached."""
    key = spec.key()
    out = _archive(spec.name, key)
    if out.exists():
        return out
    base()
    started = time.monotonic()
    args = [a for k, v in spec.build_args.items() for a in ("--build-arg", f"{k}={v}")]
    cert = os.environ.get("PIP_CERT", "")
    secret = ["--secret", f"id=pipcert,src={cert}"] if cert else []
    result = _buildah(
        "bud",
        "--network",
        "host",
        "--isolation",
        "chroot",
        "--layers",
        "--pull-never",
        *secret,
        *args,
        "-f",
        str(REPO / spec.dockerfile),
        "-t",
        spec.name,
        str(REPO),
        check=False,
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-6000:]
        raise ImageError(f"building {spec.name} from {spec.dockerfile} failed:\n{tail}")
    _stage(f"built {spec.name}", started)
    started = time.monotonic()
    archive = _save(spec.name, key)
    _stage(f"saved {spec.name} ({archive.stat().st_size / 2**30:.1f} GiB)", started)
    return archive


def main() -> int:
    print(pause())
    for spec in (operator_image(), serving_image()):
        print(build(spec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
