"""model.yaml, POOLS.yaml and the operator config as files: read at most 1 MiB, parsed and typed
as kubectl and the API server would take them."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ridgeline.api import InferenceModel
from ridgeline.config_files import load_platform_config, load_pools
from ridgeline.manifest import ManifestError, load_inference_model
from ridgeline.planner import PoolsFileError
from ridgeline.platform_config import ConfigError
from ridgeline.yamlfile import MAX_BYTES
from tests.conftest import EXAMPLES

TINY = (EXAMPLES / "tiny-cpu.yaml").read_text()
POOLS = str(EXAMPLES / "pools.yaml")
TOO_LARGE = f"larger than {MAX_BYTES} bytes (1 MiB), the most a"


def _cli(*argv: str, stdin: int | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in a child capped at 1 GiB of address space and 60 s: where a read is
    unbounded it fails there (MemoryError) instead of taking this machine's memory."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))

    return subprocess.run(
        [sys.executable, "-m", "ridgeline.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit,
        stdin=stdin,
    )


# ---- the 1 MiB cap, read and not stat'ed ------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "what"),
    [
        (["plan", "/dev/zero", "--pools", POOLS], "manifest"),
        (["plan", str(EXAMPLES / "tiny-cpu.yaml"), "--pools", "/dev/zero"], "pools file"),
        (
            ["render", str(EXAMPLES / "tiny-cpu.yaml"), "--pools", POOLS, "--config", "/dev/zero"],
            "config file",
        ),
    ],
    ids=["manifest", "pools", "config"],
)
def test_dev_zero_is_refused_after_the_cap(argv: list[str], what: str) -> None:
    result = _cli(*argv)
    assert result.returncode == 1, result.stderr
    assert f"/dev/zero: {TOO_LARGE} {what}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_fifo_that_never_ends_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "model.yaml"
    os.mkfifo(fifo)
    wrote = [0]

    def write_forever() -> None:
        # Until the reader closes its end: then EPIPE ends this thread.
        try:
            with fifo.open("wb") as f:
                while True:
                    f.write(b"# " + b"x" * 65_533 + b"\n")
                    wrote[0] += 65_536
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=write_forever, daemon=True)
    writer.start()
    result = _cli("plan", str(fifo), "--pools", POOLS)
    writer.join(timeout=30)
    assert not writer.is_alive()
    assert result.returncode == 1, result.stderr
    assert f"{fifo}: {TOO_LARGE} manifest" in result.stderr
    # The reader stopped at the cap; the pipe's buffer holds the little more that was written.
    assert wrote[0] < MAX_BYTES + 2**20


def test_the_cap_is_inclusive(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    padding = MAX_BYTES - len(TINY.encode()) - 1
    path.write_text(TINY + "#" + "x" * padding)
    assert path.stat().st_size == MAX_BYTES
    assert load_inference_model(path).metadata.name == "tiny"
    path.write_text(TINY + "#" + "x" * (padding + 1))
    with pytest.raises(ManifestError) as err:
        load_inference_model(path)
    assert str(err.value) == f"{path}: {TOO_LARGE} manifest may be"


def test_oversized_pools_and_config_files(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_BYTES + 1))
    with pytest.raises(PoolsFileError, match=re.escape(f"{TOO_LARGE} pools file")):
        load_pools(big)
    with pytest.raises(ConfigError, match=re.escape(f"{TOO_LARGE} config file")):
        load_platform_config(big)


# ---- a key given twice --------------------------------------------------------------------------


def _manifest(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "model.yaml"
    path.write_text(text)
    return path


def test_a_key_twice_is_refused_naming_key_and_lines(tmp_path: Path) -> None:
    text = TINY.replace("    maxContextTokens: 1024\n", "    maxContextTokens: 1024\n" * 2)
    path = _manifest(tmp_path, text)
    line = text.splitlines().index("    maxContextTokens: 1024") + 1
    with pytest.raises(ManifestError) as err:
        load_inference_model(path)
    assert str(err.value) == (
        f"{path}: not valid YAML: line {line + 1}, column 5: duplicate key "
        f"'maxContextTokens' (first on line {line})"
    )


def test_a_key_twice_in_a_flow_mapping(tmp_path: Path) -> None:
    path = _manifest(tmp_path, TINY.replace("  replicas:", "  replicas: {min: 1, min: 2}\n  x:"))
    with pytest.raises(ManifestError, match="duplicate key 'min'"):
        load_inference_model(path)


def test_a_merged_key_may_be_overridden(tmp_path: Path) -> None:
    # YAML's merge keys: what `<<` brings in, the mapping itself may set again.
    text = TINY.replace(
        "  workload:\n    maxContextTokens: 1024",
        "  workload:\n    <<: &w {maxContextTokens: 512, mode: online}\n    maxContextTokens: 1024",
    )
    model = load_inference_model(_manifest(tmp_path, text))
    assert model.spec.workload.max_context_tokens == 1024


def test_true_and_1_are_different_keys(tmp_path: Path) -> None:
    path = _manifest(tmp_path, TINY.replace("  namespace: default", "  x: {true: a, 1: b}"))
    assert load_inference_model(path).metadata.name == "tiny"


def test_a_key_twice_in_pools_and_config(tmp_path: Path) -> None:
    pools = tmp_path / "pools.yaml"
    pools.write_text("- {name: c, gpuProduct: cpu, gpusPerNode: 0, gpusPerNode: 1}\n")
    with pytest.raises(PoolsFileError, match="duplicate key 'gpusPerNode'"):
        load_pools(pools)
    config = tmp_path / "config.yaml"
    config.write_text("images: []\nimages: []\n")
    with pytest.raises(ConfigError, match=r"line 2, column 1: duplicate key 'images'"):
        load_platform_config(config)


# ---- types as the CRD's OpenAPI schema has them --------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "field", "problem"),
    [
        (
            "maxContextTokens: 1024",
            'maxContextTokens: "1024"',
            "spec.workload.maxContextTokens",
            "valid integer",
        ),
        (
            "maxContextTokens: 1024",
            "maxContextTokens: 1024.5",
            "spec.workload.maxContextTokens",
            "valid integer",
        ),
        (
            "maxContextTokens: 1024",
            "maxContextTokens: true",
            "spec.workload.maxContextTokens",
            "valid integer",
        ),
        ("min: 1", "min: '1'", "spec.replicas.min", "valid integer"),
        ("name: tiny", "name: 7", "metadata.name", "valid string"),
        ("accelerators: [cpu]", "accelerators: cpu", "spec.accelerators", "valid array"),
        (
            "maxContextTokens: 1024",
            "maxContextTokens: 1024\n    slo: {timePerOutputTokenMs: '50'}",
            "spec.workload.slo.timePerOutputTokenMs",
            "valid number",
        ),
    ],
    ids=[
        "quoted-int",
        "fraction",
        "bool-for-int",
        "quoted-min",
        "int-for-name",
        "scalar-for-list",
        "quoted-number",
    ],
)
def test_types_the_api_server_refuses(
    tmp_path: Path, old: str, new: str, field: str, problem: str
) -> None:
    assert old in TINY
    path = _manifest(tmp_path, TINY.replace(old, new, 1))
    with pytest.raises(ManifestError, match=rf"{field}: Input should be a {problem}"):
        load_inference_model(path)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # kube-openapi takes a float with no fraction for an integer (IsFloat64AJSONInteger)
        ("maxContextTokens: 1024", "maxContextTokens: 1024.0"),
        # an integer is a JSON number
        ("maxContextTokens: 1024", "maxContextTokens: 1024\n    slo: {timePerOutputTokenMs: 50}"),
        # kubectl's YAML reader keeps an unquoted timestamp as text
        ("namespace: default", "namespace: default\n  creationTimestamp: 2024-05-01T10:00:00Z"),
        ("quantization", "quantization"),  # the enums from their JSON strings
    ],
    ids=["integral-float", "int-for-number", "timestamp", "as-written"],
)
def test_types_the_api_server_takes(tmp_path: Path, old: str, new: str) -> None:
    text = TINY.replace(old, new, 1) + "  quantization: int8\n"
    model = load_inference_model(_manifest(tmp_path, text))
    assert model.spec.workload.max_context_tokens == 1024
    assert model.spec.quantization.value == "int8"


def test_non_finite_numbers_are_refused_by_path(tmp_path: Path) -> None:
    text = TINY.replace(
        "maxContextTokens: 1024", "maxContextTokens: 1024\n    slo: {timePerOutputTokenMs: .nan}"
    )
    with pytest.raises(
        ManifestError, match=r"spec\.workload\.slo\.timePerOutputTokenMs: nan is not a JSON number"
    ):
        load_inference_model(_manifest(tmp_path, text))


def test_the_operator_still_reads_what_the_api_server_stored() -> None:
    # Objects from the API server were validated there; the operator's model_validate is lax as
    # before (the API server may hand back 1024.0 for an integer it accepted as such).
    import yaml

    doc = yaml.safe_load(TINY)
    doc["spec"]["workload"]["maxContextTokens"] = 1024.0
    assert InferenceModel.model_validate(doc).spec.workload.max_context_tokens == 1024
