"""Every serving image variant installs a set of versions that works together, checked without a
GPU: uv's resolver takes each variant's torch with images/serving/constraints.txt and the serving
extras against PyPI (what the image build installs), reading only the wheels' metadata, and each
torch meets
transformers' own floor, which transformers checks at import and its metadata does not declare
(below it, transformers disables PyTorch and no model loads)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
SERVING = REPO / "images" / "serving"


def variants() -> dict[str, Version]:
    """tag -> torch version, from images/serving/variants.txt."""
    out = {}
    for line in (SERVING / "variants.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            tag, _cuda, torch, _index = line.split()
            out[tag] = Version(torch)
    return out


def constraints() -> dict[str, str]:
    pins = {}
    for line in (SERVING / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{line}: constraints pin one version"
            pins[req.name] = spec.version
    return pins


def serving_requirements() -> list[str]:
    """The serving extra with the project's own extras expanded (what the image installs)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    out: list[str] = list(project["dependencies"])
    todo = ["serving"]
    while todo:
        for item in extras[todo.pop()]:
            req = Requirement(item)
            if req.name == project["name"]:
                todo.extend(req.extras)
            else:
                out.append(item)
    return out


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def transformers_torch_floor(version: str, tmp: Path) -> Version:
    """The torch version below which this transformers release disables PyTorch."""
    result = _pip("download", "--no-deps", "-q", "-d", str(tmp), f"transformers=={version}")
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp.glob("transformers-*.whl")
    source = zipfile.ZipFile(wheel).read("transformers/utils/import_utils.py").decode()
    body = source.split("def is_torch_available", 1)[1].split("\ndef ", 1)[0]
    floors = re.findall(r'version\.parse\("(\d+(?:\.\d+)*)"\)', body)
    assert floors, "transformers' is_torch_available no longer names a torch version"
    return max(Version(v) for v in floors)


def test_variants_and_catalog_list_the_same_torch() -> None:
    from ridgeline.platform_config import DEFAULT_IMAGES

    catalog = {i.image.rsplit("-", 1)[-1]: Version(i.torch) for i in DEFAULT_IMAGES}
    assert catalog == variants()


def test_every_variant_meets_transformers_torch_floor(tmp_path: Path) -> None:
    floor = transformers_torch_floor(constraints()["transformers"], tmp_path)
    too_old = {tag: str(torch) for tag, torch in variants().items() if torch < floor}
    assert not too_old, f"transformers needs torch >= {floor}; these variants have less: {too_old}"


def _resolve(torch: Version, tmp: Path) -> subprocess.CompletedProcess[str]:
    """uv, not `pip install --dry-run`: pip downloads every wheel it resolves (3-4 GB of CUDA
    libraries per variant, 12 GB for four at once), which filled a CI machine's disk; uv reads
    PyPI's PEP 658 metadata files and a few kilobytes of each wheel at most."""
    requirements = tmp / "requirements.in"
    requirements.write_text("\n".join([*serving_requirements(), f"torch=={torch}"]) + "\n")
    return subprocess.run(
        [
            *(str(Path(sys.executable).with_name("uv")), "pip", "compile", "--quiet"),
            *("--no-header", "--no-annotate", "--only-binary", ":all:"),
            *("--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28"),
            *("--cache-dir", str(tmp / "uv-cache"), "--no-config"),
            *("-c", str(SERVING / "constraints.txt"), str(requirements)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=_uv_env(),
    )


def _uv_env() -> dict[str, str]:
    """What pip is given through its environment is uv's too: a CA bundle (PIP_CERT, on build
    machines behind a TLS proxy) and a PyPI mirror (uv reads neither pip's variables nor
    pip.conf)."""
    env = dict(os.environ)
    for pip_name, uv_name in (
        ("PIP_CERT", "SSL_CERT_FILE"),
        ("PIP_INDEX_URL", "UV_INDEX_URL"),
        ("PIP_EXTRA_INDEX_URL", "UV_EXTRA_INDEX_URL"),
    ):
        if env.get(pip_name):
            env.setdefault(uv_name, env[pip_name])
    return env


def _pinned(compiled: str) -> dict[str, str]:
    """name -> version from `uv pip compile` output (`name==version` lines)."""
    out = {}
    for line in compiled.splitlines():
        if "==" in line and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            out[req.name.lower()] = spec.version
    return out


@pytest.fixture(scope="module")
def resolutions(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every variant resolved at once (each waits on PyPI, not on this machine's CPU)."""
    tmp = tmp_path_factory.mktemp("resolve")
    for tag in variants():
        (tmp / tag).mkdir()
    with ThreadPoolExecutor(max_workers=len(variants())) as pool:
        futures = {
            tag: pool.submit(_resolve, torch, tmp / tag) for tag, torch in variants().items()
        }
        return {tag: future.result() for tag, future in futures.items()}


@pytest.mark.parametrize("tag", sorted(variants()))
def test_variant_resolves_with_pinned_libraries(
    tag: str, resolutions: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    """The resolver, with every Requires-Dist of transformers, bitsandbytes, accelerate and Ray,
    accepts the variant's torch beside the pinned libraries (PyPI's metadata; the CUDA index's
    wheels of one torch version declare the same Python requirements)."""
    result = resolutions[tag]
    assert result.returncode == 0, f"variant {tag} does not resolve:\n{result.stderr[-3000:]}"
    resolved = _pinned(result.stdout)
    assert Version(resolved["torch"]) == variants()[tag]
    for name, version in constraints().items():
        assert resolved[name] == version, f"{name}: resolved {resolved[name]}, pinned {version}"
