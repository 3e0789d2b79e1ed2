"""`ridgeline plan` as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ridgeline.cli import main
from tests.conftest import EXAMPLES

REQUIRED = {
    "gpuProduct",
    "gpusPerReplica",
    "criticalBatch",
    "batchTarget",
    "maxBatchByMemory",
    "weightBytes",
    "kvBytesPerToken",
    "bound",
    "predicted",
    "reasons",
    "options",
}


def _plan(capsys, skeleton_dir, example: str, model: str, *extra: str) -> tuple[int, str, str]:
    rc = main(
        [
            "plan",
            str(EXAMPLES / example),
            "--pools",
            str(EXAMPLES / "pools.yaml"),
            "--model-uri",
            str(skeleton_dir(model)),
            *extra,
        ]
    )
    out, err = capsys.readouterr()
    return rc, out, err


def test_json_is_the_status_plan(capsys, skeleton_dir) -> None:
    rc, out, _ = _plan(capsys, skeleton_dir, "llama-8b.yaml", "llama-3.1-8b", "-o", "json")
    assert rc == 0
    plan = json.loads(out)
    assert set(plan) >= REQUIRED
    assert set(plan["predicted"]) >= {"tokensPerSecond", "timePerOutputTokenMs"}
    assert plan["kvBytesPerToken"] == 131072
    assert plan["gpuProduct"] in ("NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-40GB")


def test_text_explains(capsys, skeleton_dir) -> None:
    rc, out, _ = _plan(capsys, skeleton_dir, "qwen-batch.yaml", "qwen2-7b")
    assert rc == 0
    assert "Ridge batch on H100-SXM5" in out
    assert "Options considered" in out


def test_yaml_and_plot(capsys, skeleton_dir, tmp_path: Path) -> None:
    png = tmp_path / "roofline.png"
    rc, out, _ = _plan(
        capsys,
        skeleton_dir,
        "llama-70b-nf4.yaml",
        "llama-3.1-70b",
        "-o",
        "yaml",
        "--plot",
        str(png),
    )
    assert rc == 0
    assert "batchTarget:" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


def test_infeasible_exits_non_zero_with_the_shortfall(capsys, skeleton_dir, tmp_path: Path) -> None:
    pools = tmp_path / "pools.yaml"
    pools.write_text("- {name: l4, gpuProduct: NVIDIA-L4, gpusPerNode: 1}\n")
    rc = main(
        [
            "plan",
            str(EXAMPLES / "llama-70b-nf4.yaml"),
            "--pools",
            str(pools),
            "--model-uri",
            str(skeleton_dir("llama-3.1-70b")),
        ]
    )
    _, err = capsys.readouterr()
    assert rc == 2
    assert "infeasible" in err
    assert "exceed" in err


def test_bad_manifest_names_the_field(capsys, tmp_path: Path) -> None:
    bad = tmp_path / "model.yaml"
    bad.write_text(
        "apiVersion: ridgeline.dev/v1alpha1\nkind: InferenceModel\nmetadata: {name: x}\n"
        "spec: {model: {uri: 's3://m/x'}, quantization: fp3}\n"
    )
    rc = main(["plan", str(bad), "--pools", str(EXAMPLES / "pools.yaml")])
    _, err = capsys.readouterr()
    assert rc == 1
    assert "spec.quantization" in err


def test_unknown_gpu_in_pools(capsys, tmp_path: Path) -> None:
    pools = tmp_path / "pools.yaml"
    pools.write_text("- {name: x, gpuProduct: NVIDIA-A100-SXM4-40GB-MIG-1g.5gb, gpusPerNode: 7}\n")
    rc = main(["plan", str(EXAMPLES / "llama-8b.yaml"), "--pools", str(pools)])
    _, err = capsys.readouterr()
    assert rc == 1
    assert "MIG slice" in err


@pytest.mark.parametrize("product", ["nvidia-h100-80gb-hbm3", "NVIDIA-H100-80GB-HBM3-SHARED"])
def test_products_match_case_insensitively(product: str) -> None:
    from ridgeline.hardware import lookup

    assert lookup(product).accelerator.name == "H100-SXM5"
