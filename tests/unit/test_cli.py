"""`ridgeline plan` as a user runs it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ridgeline.cli import main
from tests.conftest import EXAMPLES, example_config

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


# ---- bad input: a one-line error naming the file, exit 1, never a traceback ------------------


def _run(capsys, *argv: str) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    rc = main(list(argv))
    _, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, err


def _pools_with(tmp_path: Path, old: str, new: str) -> Path:
    path = tmp_path / "pools.yaml"
    text = (EXAMPLES / "pools.yaml").read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (bytes(range(256)), r"not a text file \(invalid UTF-8 at byte 128\)"),
        (b"a: " + b"[" * 20_000 + b"]" * 20_000, "not valid YAML: nested too deeply"),
        (b"a: [\n\tb", r"not valid YAML: line 2, column 1: found character '\\t'"),
    ],
)
def test_unreadable_manifest(capsys, tmp_path: Path, content: bytes, problem: str) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "model.yaml"
    bad.write_bytes(content)
    rc, err = _run(capsys, "plan", str(bad), "--pools", str(EXAMPLES / "pools.yaml"))
    assert rc == 1
    assert re.search(rf"^ridgeline plan: {re.escape(str(bad))}: {problem}", err)
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("memoryGiB: 16", "memoryGiB: .inf", "3.memoryGiB: Input should be a finite number"),
        ("memoryGiB: 16", "memoryGiB: 1e300", "3.memoryGiB: Input should be less than or equal"),
        (
            "nodes: 4\n- name: cpu",
            f"nodes: {10**400}\n- name: cpu",
            "2.nodes: Input should be less",
        ),
        ("- name: h100", "- name: h100\n  x: " + "[" * 20_000, "not valid YAML: nested too deeply"),
    ],
    ids=["inf", "1e300", "huge-int", "deep"],
)
def test_pools_with_impossible_numbers(  # type: ignore[no-untyped-def]
    capsys, tmp_path: Path, skeleton_dir, old: str, new: str, problem: str
) -> None:
    pools = _pools_with(tmp_path, old, new)
    rc, err = _run(
        capsys,
        "plan",
        str(EXAMPLES / "tiny-cpu.yaml"),
        "--pools",
        str(pools),
        "--model-uri",
        str(skeleton_dir("tiny-llama")),
    )
    assert rc == 1
    assert problem in err


@pytest.mark.parametrize("name", ['""', "Tiny_Model", "-x"])
def test_invalid_name(capsys, tmp_path: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "model.yaml"
    bad.write_text((EXAMPLES / "tiny-cpu.yaml").read_text().replace("name: tiny", f"name: {name}"))
    rc, err = _run(capsys, "plan", str(bad), "--pools", str(EXAMPLES / "pools.yaml"))
    assert rc == 1
    assert "metadata.name:" in err


def test_plot_into_a_missing_directory(capsys, skeleton_dir, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "no" / "such" / "dir" / "plot.png"
    rc, _out, err = _plan(
        capsys, skeleton_dir, "llama-8b.yaml", "llama-3.1-8b", "--plot", str(target)
    )
    assert rc == 1
    assert "Traceback" not in err
    assert f"ridgeline plan: cannot write the plot to {target}: No such file or directory" in err


def test_model_that_cannot_be_sized(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "model"
    root.mkdir()
    (root / "config.json").write_text(
        json.dumps({**example_config("tiny-llama"), "hidden_size": 3})
    )
    raw = json.dumps({"__metadata__": {}}).encode()
    (root / "model.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw)
    rc, err = _run(
        capsys,
        "plan",
        str(EXAMPLES / "tiny-cpu.yaml"),
        "--pools",
        str(EXAMPLES / "pools.yaml"),
        "--model-uri",
        str(root),
    )
    assert rc == 1
    assert "is not a multiple of num_attention_heads" in err
    assert err.count("\n") == 1


def test_plot_write_failure_is_an_error(capsys, skeleton_dir) -> None:  # type: ignore[no-untyped-def]
    # /dev/full refuses every write with ENOSPC, as a full disk does; savefig used to lose it.
    rc, _out, err = _plan(
        capsys, skeleton_dir, "llama-8b.yaml", "llama-3.1-8b", "--plot", "/dev/full"
    )
    assert rc == 1
    assert "ridgeline plan: cannot write the plot to /dev/full: No space left on device" in err
    assert "written" not in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("flag", "value", "problem"),
    [
        ("--port", "99999", "99999 is not a port (1 to 65535)"),
        ("--port", "0", "0 is not a port (1 to 65535)"),
        ("--port", "-1", "-1 is not a port (1 to 65535)"),
        ("--metrics-port", "65536", "65536 is not a port (1 to 65535)"),
        ("--port", "http", "'http' is not a port number"),
    ],
)
def test_serve_refuses_ports_out_of_range(capsys, flag: str, value: str, problem: str) -> None:  # type: ignore[no-untyped-def]
    # argparse's usage error (exit 2) before anything starts, not Ray's traceback later.
    with pytest.raises(SystemExit) as exit_:
        main(["serve", str(EXAMPLES / "tiny-cpu.yaml"), f"{flag}={value}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: {problem}" in err
    assert "Traceback" not in err
