"""Which models the running batch can hold, decided from the config when the engine loads.

The running batch keeps every layer's keys and values at full length, one column per token
(``slot_cache.py``), whatever cache transformers would build for the model. That is exact for
full attention and for sliding-window attention: each row's tokens fill consecutive columns up
to the current one, so a window counted in columns is the window in tokens, and the model's
own sliding-window mask (``masking_utils.create_sliding_window_causal_mask``, which measures
query and key indices in the cache's columns) hides what lies outside it. Every other layer
kind transformers knows (chunked attention, linear or recurrent state, layers that reuse
another layer's KV, layers without attention) would need its own state or its own mask
coordinates, so such a model is refused here, before it takes a request, and not at its first
prefill.

The kinds are read with the function ``DynamicCache(config=...)`` itself uses, so what is
accepted is exactly what transformers would cache as ``DynamicLayer`` or
``DynamicSlidingWindowLayer``.
"""

from __future__ import annotations

from typing import Any

from transformers.cache_utils import get_layer_types_and_kwargs

FULL = "full_attention"
SLIDING = "sliding_attention"


class UnbatchableModelError(ValueError):
    """The model has layers the continuous-batching KV layout cannot hold."""


def _field(config: Any, layer: int) -> str:
    """The config field that made ``layer`` what it is, for the error message."""
    modes = getattr(config, "kv_sharing_modes", None)
    if modes is not None and modes[layer] == "reuse":
        return f"num_kv_shared_layers={getattr(config, 'num_kv_shared_layers', '?')}"
    types = getattr(config, "layer_types", None)
    if types is not None:
        return f"layer_types[{layer}]={types[layer]!r}"
    if getattr(config, "attention_chunk_size", None) is not None:
        return f"attention_chunk_size={config.attention_chunk_size}"
    return "its layer layout"


def sliding_window(model_config: Any) -> int | None:
    """Check that every layer is full or sliding-window attention (or raise
    ``UnbatchableModelError`` naming the model type and the config field); return the window
    when every layer slides (older columns are never read again, so they can be dropped), else
    None."""
    config = model_config.get_text_config(decoder=True)
    kinds, per_layer = get_layer_types_and_kwargs(config)
    for layer, kind in enumerate(kinds):
        if kind not in (FULL, SLIDING):
            raise UnbatchableModelError(
                f"model_type {config.model_type!r}: layer {layer} is {kind!r} "
                f"({_field(config, layer)}); continuous batching holds only full and "
                "sliding-window attention layers"
            )
    # the widest window any layer's mask may use (the masks read the config's own field)
    windows = [kwargs.get("sliding_window") for kwargs in per_layer]
    windows.append(getattr(config, "sliding_window", None))
    if not kinds or any(kind != SLIDING for kind in kinds) or None in windows:
        return None
    return max(int(window) for window in windows if window is not None)


def full_attention_only(model_config: Any) -> bool:
    """Whether every layer attends to the whole context (no sliding or other layer kinds)."""
    kinds, _ = get_layer_types_and_kwargs(model_config.get_text_config(decoder=True))
    return bool(kinds) and all(kind == FULL for kind in kinds)
