"""What an engine reaches of the roofline: one table of step models per (engine, quantization).

A decode step at batch B takes

    t(B) = overhead + max(C(B) / efficiency,
                          W / (BW x weight_efficiency) + passes x KV(B) / (BW x efficiency))

where C(B) = 2 x params x B / F is the math, W the weight bytes, KV(B) = B x context x KV bytes
per token the cache a step reads (at the workload's typical lengths; memory is still sized at
the maximum context), and ``passes`` how many times the engine moves that cache per step.

Every row cites its source. The device terms (efficiencies, KV passes) are fitted to published
measurements of the same software stack, transformers with eager attention and a
``DynamicCache``, and of bitsandbytes under it. The host term, ``host_s_per_layer x layers``, is
Ridgeline's own engine measured on a GPU (``make bench`` there, docs/benchmarks.md "Serving,
GPU"): an eager forward launches some thirty kernels per decoder layer from Python, and on the
measured H100 host that, not the GPU, set the step time of a 1B model up to batch 512. On a CPU
the same dispatch (and the wake-ups of torch's threads) is most of a small model's step: the CPU
rows' host terms, and their efficiencies against a CPU pool's estimated roofs, are fitted to the
engine on a CPU (docs/benchmarks.md "Serving, CPU step model").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ridgeline.api.inference_model import Quantization


class Engine(enum.StrEnum):
    TRANSFORMERS = "transformers"


@dataclass(frozen=True)
class StepModel:
    engine: Engine
    quantization: Quantization
    on_cpu: bool
    # Fixed seconds per step: sampling, scheduling.
    overhead_s: float
    # Host seconds per decoder layer per step (Python and kernel launches of the eager forward):
    # it grows with depth, not with the batch, and the GPU idles through it at small batches.
    host_s_per_layer: float
    # Fraction of the compute roof and of the KV-cache bandwidth roof reached.
    efficiency: float
    # Fraction of the weight-streaming roof reached: bitsandbytes dequantizes every weight on
    # every step, so its rows sit far below the 16-bit one.
    weight_efficiency: float
    # Passes over the KV cache per step: DynamicCache.update concatenates (reads the cache and
    # writes a copy one token longer), then attention reads it.
    kv_passes: float
    # The engine pads the rows of a batch to the longest one, so a step reads every row at the
    # longest in-flight context (typical prompt + output), not at the mean.
    padded_rows: bool
    source: str


# transformers eager, fp16, Llama-2-13B on one A100-SXM4-80GB (huggingface/optimum
# tests/benchmark/README.md, "GPTQ benchmark", unquantized rows, prompt 512, 512 new tokens):
# 36.96, 37.35, 37.89, 47.37 and 69.94 ms per token at batch 1, 2, 4, 8, 16. A least-squares fit
# of t(B) with kv_passes = 3 gives overhead 0.45 ms and efficiency 0.41 (every point within 8%;
# 0.35 of the roofline at batch 1, the "about 0.3" usually quoted for eager decode).
_HF_OVERHEAD_S = 0.45e-3
_HF_EFFICIENCY = 0.41
_HF_KV_PASSES = 3.0
_OPTIMUM = "huggingface/optimum tests/benchmark/README.md (GPTQ benchmark, fp16 rows)"
# bitsandbytes under transformers, Llama-2-7B on an A100, batch 1: LLM.int8 at 15% of fp16 speed
# (bitsandbytes issue #181: 6.6x slower), 4-bit about 2.1x slower (design section 3; bnb #490
# and #611 agree on the direction). The weight efficiency is what makes t(1) that many times
# the 16-bit row's on Llama-2-7B (A100-40GB: 13.48 GB fp16, 7.01 GB int8, 3.87 GB nf4 weights);
# tests/unit/test_published_numbers.py recomputes the ratios from this table.
_BNB_INT8_WEIGHT_EFFICIENCY = 0.032
_BNB_NF4_WEIGHT_EFFICIENCY = 0.055
# Ridgeline's engine (transformers 5.17, torch 2.11, bitsandbytes 0.50) on one H100-80GB-HBM3
# (16-core host), a random-weight Llama of 1.1B parameters and 22 layers: the decode step minus
# the device terms above, per layer, the median over batches 1-512 (docs/benchmarks.md,
# "Serving, GPU").
# bitsandbytes adds its own launches (quantize the activations, dequantize the weights) per
# linear layer.
_HOST_S_PER_LAYER_BF16 = 0.72e-3
_HOST_S_PER_LAYER_INT8 = 3.97e-3
_HOST_S_PER_LAYER_NF4 = 1.85e-3
_OWN_H100 = "Ridgeline engine on an H100-80GB-HBM3, make bench (docs/benchmarks.md, Serving, GPU)"
# CPU: Ridgeline's engine (torch 2.15, transformers 5.23, bitsandbytes 0.50, float32, torch's
# default two intra-op threads as a CPU replica runs) on a 2-core x86_64 machine, random-weight
# Llamas of the example model's shape at 1, 2, 4 and 8 layers, batches 1-128: (host seconds per
# decoder layer, efficiency), least squares of the log ratio of the measured step to
#     host x layers + device terms at efficiency 1 / efficiency
# over every point (no fixed part per step), against the roofs of a CPU pool as
# hardware.cpu_accelerator sizes it from its cores. tests/bench/bench_cpu_steps.py;
# docs/benchmarks.md, "Serving, CPU step model". Before, the efficiency was an assumption (half
# the roofline) and the host term was fitted at batches 1-8 only.
_CPU_FIT = {
    Quantization.NONE: (1.375e-3, 0.420),
    Quantization.INT8: (1.872e-3, 0.374),
    Quantization.NF4: (2.715e-3, 0.333),
}
_OWN_CPU = (
    "Ridgeline engine on a 2-core x86_64 CPU, make bench (docs/benchmarks.md, Serving, CPU step "
    "model)"
)


def _cpu_row(quantization: Quantization, weight_slowdown: float, source: str) -> StepModel:
    """A CPU row from its fit; bitsandbytes' weight path keeps its measured GPU slowdown
    against the 16-bit row (``weight_slowdown``), which the fitted efficiency scales."""
    host_s_per_layer, efficiency = _CPU_FIT[quantization]
    return StepModel(
        Engine.TRANSFORMERS,
        quantization,
        on_cpu=True,
        overhead_s=0.0,
        host_s_per_layer=host_s_per_layer,
        efficiency=efficiency,
        weight_efficiency=efficiency * weight_slowdown,
        kv_passes=_HF_KV_PASSES,
        padded_rows=True,
        source=source,
    )


STEP_MODELS: tuple[StepModel, ...] = (
    StepModel(
        Engine.TRANSFORMERS,
        Quantization.NONE,
        on_cpu=False,
        overhead_s=_HF_OVERHEAD_S,
        host_s_per_layer=_HOST_S_PER_LAYER_BF16,
        efficiency=_HF_EFFICIENCY,
        weight_efficiency=_HF_EFFICIENCY,
        kv_passes=_HF_KV_PASSES,
        padded_rows=True,
        source=f"device terms fitted to {_OPTIMUM}: Llama-2-13B, A100-SXM4-80GB, batch 1-16; "
        f"host term: {_OWN_H100}",
    ),
    StepModel(
        Engine.TRANSFORMERS,
        Quantization.INT8,
        on_cpu=False,
        overhead_s=_HF_OVERHEAD_S,
        host_s_per_layer=_HOST_S_PER_LAYER_INT8,
        efficiency=_HF_EFFICIENCY,
        weight_efficiency=_BNB_INT8_WEIGHT_EFFICIENCY,
        kv_passes=_HF_KV_PASSES,
        padded_rows=True,
        source="bitsandbytes LLM.int8 6.6x slower than fp16 at batch 1, Llama-2-7B on A100 "
        "(github.com/bitsandbytes-foundation/bitsandbytes/issues/181: 15% of fp16 speed); "
        f"host term: {_OWN_H100}",
    ),
    StepModel(
        Engine.TRANSFORMERS,
        Quantization.NF4,
        on_cpu=False,
        overhead_s=_HF_OVERHEAD_S,
        host_s_per_layer=_HOST_S_PER_LAYER_NF4,
        efficiency=_HF_EFFICIENCY,
        weight_efficiency=_BNB_NF4_WEIGHT_EFFICIENCY,
        kv_passes=_HF_KV_PASSES,
        padded_rows=True,
        source="bitsandbytes 4-bit 2.1x slower than fp16 at batch 1, Llama-2-7B on A100 "
        "(design section 3; github.com/bitsandbytes-foundation/bitsandbytes/issues/181); "
        f"host term: {_OWN_H100}",
    ),
    _cpu_row(Quantization.NONE, 1.0, f"host term and efficiency fitted: {_OWN_CPU}"),
    _cpu_row(
        Quantization.INT8,
        _BNB_INT8_WEIGHT_EFFICIENCY / _HF_EFFICIENCY,
        f"host term and efficiency fitted: {_OWN_CPU}; weight path as bitsandbytes int8 slows "
        "the GPU row",
    ),
    _cpu_row(
        Quantization.NF4,
        _BNB_NF4_WEIGHT_EFFICIENCY / _HF_EFFICIENCY,
        f"host term and efficiency fitted: {_OWN_CPU}; weight path as bitsandbytes nf4 slows "
        "the GPU row",
    ),
)


def step_model(engine: Engine, quantization: Quantization, on_cpu: bool) -> StepModel:
    for row in STEP_MODELS:
        if (row.engine, row.quantization, row.on_cpu) == (engine, quantization, on_cpu):
            return row
    raise KeyError(f"no step model for {engine} {quantization} on {'CPU' if on_cpu else 'GPU'}")


def kv_context_tokens(row: StepModel, prompt_tokens: int, output_tokens: int) -> float:
    """Context a step reads per sequence. Padded rows: the longest in flight, a sequence about
    to finish. Otherwise the mean over a sequence's decode: the prompt plus half the output."""
    if row.padded_rows:
        return float(prompt_tokens + output_tokens)
    return prompt_tokens + output_tokens / 2
