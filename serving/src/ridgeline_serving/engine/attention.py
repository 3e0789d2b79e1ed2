"""Decode attention for grouped-query models with a padding mask, without copying the KV.

A running batch always carries a mask (its rows start at different columns). transformers'
``sdpa`` path then cannot use SDPA's native grouped-query mode, so every layer first expands
the keys and values to one copy per query head (``repeat_kv``): 8x the KV bytes written and
read each decode step for a Llama with 32 query and 4 KV heads (docs/benchmarks.md, "Serving
engine, GPU": on an H100 a masked decode step of ~127 rows took 101-108 ms with it, 74-85 ms
without).

With one query token per row the fix is exact and cheap: the query heads that share a KV head
become that KV head's query "positions", so SDPA attends them to the KV once, under the same
mask (which is the same for every query head of a row). Prefill (several query tokens), models
without grouped heads and anything else unusual go to transformers' own ``sdpa`` function.

SDPA's cuDNN backend is switched off for the replica's process. PyTorch builds a cuDNN graph
per sequence length (pytorch/pytorch#155958 makes reuse opt-in), and a decode step's KV length
grows by one every step: on an H100 the masked decode steps ran cuDNN's kernel, with the GPU
idle most of each step, while whole batches (no mask, flash kernel) stepped twice as fast. The
flash and memory-efficient kernels need no per-shape build.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

NAME = "ridgeline_grouped_decode"


def grouped_decode_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # batch x query heads x query tokens x head dim
    key: torch.Tensor,  # batch x KV heads x columns x head dim
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,  # batch x 1 x query tokens x columns, or None
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    batch, heads, tokens, head_dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    if (
        tokens != 1
        or groups == 1
        or heads != kv_heads * groups
        or kwargs.get("position_bias") is not None
        or (attention_mask is not None and attention_mask.shape[1] != 1)
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    # head h reads KV head h // groups (repeat_kv's order): a view, no copy
    grouped = query.view(batch, kv_heads, groups, head_dim)
    out = torch.nn.functional.scaled_dot_product_attention(
        grouped, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling
    )
    return out.reshape(batch, heads, 1, head_dim).transpose(1, 2).contiguous(), None


def takes_attention_functions(model_class: Any) -> bool:
    """Whether a model class's attention layers look their function up by name in
    transformers' attention interface (``_supports_attention_backend``, which
    ``PreTrainedModel.is_backend_compatible`` reads), and so take a registered one and the
    masks ``masking_utils`` builds. Falcon keeps its own table of attention classes (a
    registered name is a ``KeyError`` there) and adds ALiBi to a mask it builds from the 2D
    padding mask."""
    return bool(getattr(model_class, "_supports_attention_backend", False))


def handles(config: Any) -> bool:
    """Whether the model's class runs on transformers' SDPA attention, which this function is
    (and falls back to), and takes registered attention functions. Classes that do not pass
    what SDPA cannot do: Gemma-2 soft-caps its attention logits (its prefill would fail),
    gpt-oss adds attention sinks (its decode would silently differ); they keep transformers'
    own choice (eager), as do classes with their own attention table (Falcon). A class
    transformers does not map (remote code) is left to ``from_pretrained``, as before."""
    try:
        model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        return True
    return bool(getattr(model_class, "_supports_sdpa", False)) and takes_attention_functions(
        model_class
    )


def register() -> str:
    """Make the function and its mask (SDPA's) known to transformers; returns its name."""
    torch.backends.cuda.enable_cudnn_sdp(False)  # a graph build per KV length: see above
    AttentionInterface.register(NAME, grouped_decode_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME
