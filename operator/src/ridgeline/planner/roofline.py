"""Decode-step time on the roofline. One formula per function; units in the names."""

from __future__ import annotations

import math

# Fraction of the roofline a transformers decode step reaches (kernel launch gaps, sampling,
# Python). An assumption until calibrated: `make bench` on a GPU measures it per quantization
# and docs/benchmarks.md records the figure.
DECODE_EFFICIENCY = 0.5


def flops_per_token(num_params: int) -> float:
    """A multiply and an add per parameter (Kipply)."""
    return 2.0 * num_params


def ridge_batch(flops_per_s: float, bytes_per_weight: float, bandwidth_bytes_per_s: float) -> float:
    """B* = F x bytes per weight / (2 x BW): below it a decode step streams weights, above it
    it waits on math."""
    return flops_per_s * bytes_per_weight / (2.0 * bandwidth_bytes_per_s)


def compute_seconds(num_params: int, batch: float, flops_per_s: float) -> float:
    return flops_per_token(num_params) * batch / flops_per_s


def memory_seconds(
    weight_bytes: int,
    batch: float,
    context_tokens: int,
    kv_bytes_per_token: int,
    bandwidth_bytes_per_s: float,
) -> float:
    """Every step reads all weights and every sequence's KV cache (at full context: the
    planner sizes for the worst case)."""
    return (weight_bytes + batch * context_tokens * kv_bytes_per_token) / bandwidth_bytes_per_s


def decode_step_seconds(
    num_params: int,
    weight_bytes: int,
    batch: float,
    context_tokens: int,
    kv_bytes_per_token: int,
    flops_per_s: float,
    bandwidth_bytes_per_s: float,
    efficiency: float = DECODE_EFFICIENCY,
) -> float:
    """t(B) = max(compute, memory) / efficiency, for the GPU that computes. Under a layer split
    one GPU works at a time, so N GPUs take as long as one GPU would with N x its memory."""
    roof = max(
        compute_seconds(num_params, batch, flops_per_s),
        memory_seconds(
            weight_bytes, batch, context_tokens, kv_bytes_per_token, bandwidth_bytes_per_s
        ),
    )
    return roof / efficiency


def batch_within_step_time(
    step_seconds: float,
    num_params: int,
    weight_bytes: int,
    context_tokens: int,
    kv_bytes_per_token: int,
    flops_per_s: float,
    bandwidth_bytes_per_s: float,
    efficiency: float = DECODE_EFFICIENCY,
) -> float:
    """Largest (real) B whose decode step fits ``step_seconds``; negative when even an empty
    batch does not (the weights alone take longer to stream)."""
    budget = step_seconds * efficiency
    by_compute = budget * flops_per_s / flops_per_token(num_params)
    by_memory = (budget * bandwidth_bytes_per_s - weight_bytes) / (
        context_tokens * kv_bytes_per_token
    )
    return min(by_compute, by_memory)


def floor_batch(batch: float) -> int:
    return max(0, math.floor(batch + 1e-9))
