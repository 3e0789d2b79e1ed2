"""Bytes: weights by quantization, KV cache, activation workspace, usable memory.

bitsandbytes quantizes nn.Linear layers only; embeddings and lm_head stay in the 16-bit
compute dtype (transformers' get_keys_to_not_convert), as do norms and biases.
"""

from __future__ import annotations

import math

from ridgeline.api.inference_model import Quantization

# The usable share of GPU memory and the prefill chunk: defaults of the serving contract, which
# the engine reads from ServingArgs, so they are written there once.
from ridgeline.api.serving_args import PREFILL_CHUNK_TOKENS as PREFILL_CHUNK_TOKENS
from ridgeline.api.serving_args import USABLE_MEMORY_FRACTION as USABLE_MEMORY_FRACTION
from ridgeline.shape import ModelShape, TensorRole

# LLM.int8: int8 weights plus one fp32 scale per output row (bnb's SCB).
INT8_WEIGHT_BYTES = 1
INT8_ROW_SCALE_BYTES = 4
# NF4: 4-bit codes; one absmax per 64-element block. Double quantization stores absmax in
# 8 bits with one fp32 scale per 256 absmax values (QLoRA, Dettmers et al. 2023, section 3).
NF4_WEIGHT_BYTES = 0.5
NF4_BLOCK_SIZE = 64
NF4_DQ_ABSMAX_BYTES = 1
NF4_DQ_BLOCK_SIZE = 256
NF4_DQ_SCALE_BYTES = 4

LOGITS_BYTES_PER_ELEMENT = 4  # logits are upcast to fp32 before sampling


def dtype_bytes(compute_dtype: str) -> int:
    return {"bfloat16": 2, "float16": 2, "float32": 4}[compute_dtype]


def bytes_per_weight(quantization: Quantization, compute_dtype: str) -> float:
    """Bytes streamed per linear-layer weight in a decode step."""
    return {
        Quantization.NONE: float(dtype_bytes(compute_dtype)),
        Quantization.INT8: float(INT8_WEIGHT_BYTES),
        Quantization.NF4: NF4_WEIGHT_BYTES,
    }[quantization]


def int8_linear_bytes(shape: ModelShape) -> int:
    return sum(
        layer.out_features * layer.in_features * INT8_WEIGHT_BYTES
        + layer.out_features * INT8_ROW_SCALE_BYTES
        for layer in shape.linear_layers
    )


def nf4_linear_bytes(shape: ModelShape) -> int:
    total = 0
    for layer in shape.linear_layers:
        numel = layer.out_features * layer.in_features
        blocks = math.ceil(numel / NF4_BLOCK_SIZE)
        total += math.ceil(numel * NF4_WEIGHT_BYTES)
        total += blocks * NF4_DQ_ABSMAX_BYTES
        total += math.ceil(blocks / NF4_DQ_BLOCK_SIZE) * NF4_DQ_SCALE_BYTES
    return total


def weight_bytes(shape: ModelShape, quantization: Quantization, compute_dtype: str) -> int:
    """Bytes of weights in device memory once loaded."""
    width = dtype_bytes(compute_dtype)
    unquantized_roles = (TensorRole.EMBEDDING, TensorRole.LM_HEAD, TensorRole.OTHER)
    kept = sum(shape.float_params_by_role[r] for r in unquantized_roles) * width
    linear_float = shape.float_params_by_role[TensorRole.LINEAR]
    if quantization is Quantization.NONE:
        linear = linear_float * width
    elif quantization is Quantization.INT8:
        linear = int8_linear_bytes(shape)
    else:
        linear = nf4_linear_bytes(shape)
    return kept + linear + shape.non_float_bytes


def kv_bytes_per_token(shape: ModelShape, kv_dtype_bytes: int) -> int:
    """2 (K and V) x layers x KV heads x head dim x bytes per element."""
    return 2 * shape.num_layers * shape.num_kv_heads * shape.head_dim * kv_dtype_bytes


def logits_bytes_per_sequence(shape: ModelShape) -> int:
    """fp32 logits over the vocabulary, one row per sequence in the step."""
    return shape.vocab_size * LOGITS_BYTES_PER_ELEMENT


def prefill_bytes(shape: ModelShape, max_context_tokens: int, compute_dtype: str) -> int:
    """One prefill chunk through the widest layer (the MLP's gate, up and activation outputs,
    plus a few hidden states)."""
    chunk = min(PREFILL_CHUNK_TOKENS, max_context_tokens)
    widest = 3 * shape.intermediate_size + 4 * shape.hidden_size
    return chunk * widest * dtype_bytes(compute_dtype)


def prefill_group_kv_bytes(kv_bytes_per_token: int, max_context_tokens: int) -> int:
    """The KV a group of prompts holds beside the running batch's until it joins it (the engine
    prefills a group in a cache of its own): prompts padded to at most a chunk together, or one
    prompt alone, up to the context."""
    return max(PREFILL_CHUNK_TOKENS, max_context_tokens) * kv_bytes_per_token


def workspace_bytes(
    shape: ModelShape, batch: float, max_context_tokens: int, compute_dtype: str
) -> int:
    """Activations live during a step: fp32 logits for the batch, and one prefill chunk."""
    logits = math.ceil(batch) * logits_bytes_per_sequence(shape)
    return logits + prefill_bytes(shape, max_context_tokens, compute_dtype)


def usable_memory_bytes(memory_bytes: int, gpus: int) -> int:
    return int(memory_bytes * USABLE_MEMORY_FRACTION) * gpus
