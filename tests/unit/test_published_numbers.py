"""The planner's formulas against published figures (shared/reference, sections 1b and 3b)."""

from __future__ import annotations

import pytest

from ridgeline.api import Quantization
from ridgeline.hardware import lookup
from ridgeline.planner import memory, roofline

GB = 1e9


def test_llama_31_8b_bf16_weights_are_16_06_gb(shape_of) -> None:
    shape = shape_of("llama-3.1-8b")
    assert shape.num_params == pytest.approx(8.03e9, rel=0.002)
    # reference 3b: 16.06 GB (canitrun: "FP16 16.0 GB"); tolerance 0.2%
    assert memory.weight_bytes(shape, Quantization.NONE, "bfloat16") / GB == pytest.approx(
        16.06, rel=0.002
    )


def test_llama_31_8b_kv_cache_is_128_kib_per_token(shape_of) -> None:
    assert memory.kv_bytes_per_token(shape_of("llama-3.1-8b"), 2) == 128 * 1024


def test_llama_31_8b_int8_is_about_9_1_gb(shape_of) -> None:
    # reference 3b: linear layers int8 (6.98 GB) + embeddings/lm_head bf16 (2.10 GB); 2%
    got = memory.weight_bytes(shape_of("llama-3.1-8b"), Quantization.INT8, "bfloat16") / GB
    assert got == pytest.approx(9.1, rel=0.02)


def test_llama_31_8b_nf4_is_about_5_7_gb_with_double_quant(shape_of) -> None:
    # reference 3b: about 5.7 GB with double quantization (about 6.0 without); 3%
    got = memory.weight_bytes(shape_of("llama-3.1-8b"), Quantization.NF4, "bfloat16") / GB
    assert got == pytest.approx(5.7, rel=0.03)
    assert got < 6.0


def _ridge(product: str, quant: Quantization, bandwidth: float | None = None) -> float:
    gpu = lookup(product).accelerator
    return roofline.ridge_batch(
        gpu.dense_flops_per_s,
        memory.bytes_per_weight(quant, gpu.compute_dtype),
        bandwidth or gpu.memory_bandwidth_bytes_per_s,
    )


@pytest.mark.parametrize(
    ("product", "expected", "rel"),
    [
        ("NVIDIA-A100-SXM4-40GB", 200, 0.01),  # reference 1b: 201; "about 200"
        ("NVIDIA-H100-80GB-HBM3", 295, 0.01),  # reference 1b: 295
        ("NVIDIA-A100-SXM4-80GB", 153, 0.01),
        ("NVIDIA-H200", 206, 0.01),
        ("NVIDIA-L4", 403, 0.01),
        ("Tesla-T4", 203, 0.01),  # fp16: the T4 has no bf16
    ],
)
def test_ridge_batch_bf16(product: str, expected: float, rel: float) -> None:
    assert _ridge(product, Quantization.NONE) == pytest.approx(expected, rel=rel)


def test_ridge_batch_a100_at_kipplys_1_5_tb_s_is_208() -> None:
    assert _ridge("NVIDIA-A100-SXM4-40GB", Quantization.NONE, bandwidth=1.5e12) == pytest.approx(
        208, abs=0.5
    )


@pytest.mark.parametrize("product", ["NVIDIA-A100-SXM4-40GB", "NVIDIA-H100-80GB-HBM3"])
def test_int8_halves_and_nf4_quarters_the_ridge_batch(product: str) -> None:
    bf16 = _ridge(product, Quantization.NONE)
    assert _ridge(product, Quantization.INT8) == pytest.approx(bf16 / 2)
    assert _ridge(product, Quantization.NF4) == pytest.approx(bf16 / 4)


def test_decode_step_is_memory_bound_below_the_ridge_and_compute_bound_above() -> None:
    gpu = lookup("NVIDIA-H100-80GB-HBM3").accelerator
    params = 8_030_000_000
    weights = 2 * params
    b_star = _ridge("NVIDIA-H100-80GB-HBM3", Quantization.NONE)

    def parts(batch: float) -> tuple[float, float]:
        return (
            roofline.compute_seconds(params, batch, gpu.dense_flops_per_s),
            roofline.memory_seconds(weights, batch, 0, 0, gpu.memory_bandwidth_bytes_per_s),
        )

    below_c, below_m = parts(b_star / 2)
    above_c, above_m = parts(b_star * 2)
    at_c, at_m = parts(b_star)
    assert below_m > below_c
    assert above_c > above_m
    assert at_c == pytest.approx(at_m, rel=1e-9)
    # 8B in bf16 streams 16 GB at 3.35 TB/s: about 4.8 ms per step at batch 1
    assert roofline.decode_step_seconds(
        params, weights, 1, 0, 0, gpu.dense_flops_per_s, gpu.memory_bandwidth_bytes_per_s, 1.0
    ) == pytest.approx(16.06e9 / 3.35e12, rel=0.01)
