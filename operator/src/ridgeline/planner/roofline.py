"""The roofline: peak-rate times of one decode step. One formula per function; units in the names.

These are the bounds the hardware sets. What an engine reaches of them (efficiency, per-step
overhead, how often it moves the KV cache) is in ``step_model``.
"""

from __future__ import annotations

import math


def flops_per_token(num_params: int) -> float:
    """A multiply and an add per parameter (Kipply)."""
    return 2.0 * num_params


def ridge_batch(flops_per_s: float, bytes_per_weight: float, bandwidth_bytes_per_s: float) -> float:
    """B* = F x bytes per weight / (2 x BW): below it a decode step streams weights, above it
    it waits on math."""
    return flops_per_s * bytes_per_weight / (2.0 * bandwidth_bytes_per_s)


def compute_seconds(num_params: int, batch: float, flops_per_s: float) -> float:
    return flops_per_token(num_params) * batch / flops_per_s


def weight_seconds(weight_bytes: int, bandwidth_bytes_per_s: float) -> float:
    """Every step reads every weight once."""
    return weight_bytes / bandwidth_bytes_per_s


def kv_seconds(
    batch: float, context_tokens: float, kv_bytes_per_token: int, bandwidth_bytes_per_s: float
) -> float:
    """One pass over the KV cache of ``batch`` sequences of ``context_tokens`` each."""
    return batch * context_tokens * kv_bytes_per_token / bandwidth_bytes_per_s


def memory_seconds(
    weight_bytes: int,
    batch: float,
    context_tokens: float,
    kv_bytes_per_token: int,
    bandwidth_bytes_per_s: float,
) -> float:
    """Weights plus one pass over the KV cache."""
    return weight_seconds(weight_bytes, bandwidth_bytes_per_s) + kv_seconds(
        batch, context_tokens, kv_bytes_per_token, bandwidth_bytes_per_s
    )


def roofline_step_seconds(
    num_params: int,
    weight_bytes: int,
    batch: float,
    context_tokens: float,
    kv_bytes_per_token: int,
    flops_per_s: float,
    bandwidth_bytes_per_s: float,
) -> float:
    """max(compute, memory) at peak rates: the floor no engine goes below. Under a layer split
    one GPU works at a time, so N GPUs take as long as one GPU would with N x its memory."""
    return max(
        compute_seconds(num_params, batch, flops_per_s),
        memory_seconds(
            weight_bytes, batch, context_tokens, kv_bytes_per_token, bandwidth_bytes_per_s
        ),
    )


def floor_batch(batch: float) -> int:
    return max(0, math.floor(batch + 1e-9))
