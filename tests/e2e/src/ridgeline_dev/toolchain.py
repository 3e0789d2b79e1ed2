"""Build the control plane's servers from the Go module proxy, cached by version.

Each tool module in tests/e2e/tools/<name>/ pins one upstream with ``tool`` directives; the
binaries land in ``$RIDGELINE_CACHE/bin/<name>-<hash of go.mod+go.sum>/`` so a second run (and
CI after a session on the same machine) reuses them, and a version bump rebuilds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TOOLS_DIR = Path(__file__).resolve().parents[2] / "tools"
KUBE_VERSION = "v1.36.3"


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ridgeline"
    return Path(os.environ.get("RIDGELINE_CACHE", default))


@dataclass(frozen=True)
class ToolModule:
    name: str
    # binary name -> Go package with its main
    binaries: dict[str, str]
    ldflags: str = "-s -w"

    @property
    def module_dir(self) -> Path:
        return TOOLS_DIR / self.name

    def key(self) -> str:
        digest = hashlib.sha256()
        for fname in ("go.mod", "go.sum"):
            digest.update((self.module_dir / fname).read_bytes())
        digest.update(self.ldflags.encode())
        return digest.hexdigest()[:12]

    @property
    def bin_dir(self) -> Path:
        return cache_root() / "bin" / f"{self.name}-{self.key()}"


_KUBE_LDFLAGS = " ".join(
    [
        "-s -w",
        *(
            f"-X {pkg}.{key}={value}"
            for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
            for key, value in (
                ("gitVersion", KUBE_VERSION),
                ("gitMajor", "1"),
                ("gitMinor", KUBE_VERSION.split(".")[1]),
                ("gitTreeState", "clean"),
            )
        ),
    ]
)

MODULES: tuple[ToolModule, ...] = (
    ToolModule(
        "kube",
        {
            name: f"k8s.io/kubernetes/cmd/{name}"
            for name in (
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kubectl",
                "kubelet",
                "kube-proxy",
            )
        },
        _KUBE_LDFLAGS,
    ),
    ToolModule("etcd", {"etcd": "go.etcd.io/etcd/server/v3"}),
    ToolModule("kwok", {"kwok": "sigs.k8s.io/kwok/cmd/kwok"}),
    ToolModule("kuberay", {"kuberay-operator": "github.com/ray-project/kuberay/ray-operator"}),
    ToolModule("helm", {"helm": "helm.sh/helm/v3/cmd/helm"}),
    ToolModule("minio", {"minio": "github.com/minio/minio"}),
    ToolModule("coredns", {"coredns": "github.com/coredns/coredns"}),
)


def _build_cache() -> Path:
    """Go's build cache for these builds alone: gigabytes (7 GB for all seven modules) that no
    test reads once the binaries exist, so ensure_all removes it after building; a CI machine's
    disk is shared by the images and the node's containerd. The module cache stays: kwok's stage
    files and KubeRay's samples are read from it."""
    return cache_root() / "go-build"


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GOCACHE"] = str(_build_cache())
    env["GOTOOLCHAIN"] = "local"  # Go 1.27's JSON experiment breaks 1.36's OpenAPI output
    env["GOFLAGS"] = "-mod=mod -buildvcs=false"
    env.setdefault("CGO_ENABLED", "0")
    return env


def build(module: ToolModule, log: bool = True) -> Path:
    out = module.bin_dir
    if all((out / b).exists() for b in module.binaries):
        return out
    if shutil.which("go") is None:
        raise RuntimeError("Go is needed to build the test control plane (go.dev/dl)")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.monotonic()
    if log:
        print(f"[toolchain] building {module.name} ({', '.join(module.binaries)})", flush=True)
    for name, package in module.binaries.items():
        cmd = ["go", "build", "-trimpath", "-ldflags", module.ldflags, "-o", str(tmp / name)]
        subprocess.run([*cmd, package], cwd=module.module_dir, env=_go_env(), check=True)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    if log:
        print(f"[toolchain] {module.name} built in {time.monotonic() - started:.0f}s", flush=True)
    return out


def module_source_dir(module: ToolModule, path: str) -> Path:
    """A module's source in the Go module cache (kwok's stage files, KubeRay's samples)."""
    result = subprocess.run(
        ["go", "list", "-m", "-f", "{{.Dir}}", path],
        cwd=module.module_dir,
        env=_go_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(result.stdout.strip())


def ensure_all() -> dict[str, Path]:
    """Every binary by name, building what is missing."""
    paths = {}
    for module in MODULES:
        bin_dir = build(module)
        for name in module.binaries:
            paths[name] = bin_dir / name
    shutil.rmtree(_build_cache(), ignore_errors=True)
    return paths


def main() -> int:
    started = time.monotonic()
    paths = ensure_all()
    for name, path in sorted(paths.items()):
        print(f"{name:26} {path}")
    print(f"[toolchain] ready in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
