"""Architecture fields from a Hugging Face ``config.json``, with each family's quirks."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """What is wrong with config.json (the caller adds the file's URI)."""


def _int(cfg: dict[str, Any], *keys: str, default: int | None = None) -> int:
    for key in keys:
        value = cfg.get(key)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"'{key}' must be a positive integer, got {value!r}")
            return value
    if default is not None:
        return default
    raise ConfigError(f"missing '{keys[0]}'")


def architecture_fields(config: dict[str, Any]) -> dict[str, Any]:
    """The architecture as ModelShape fields. Multimodal configs nest the LM in text_config."""
    if not isinstance(config, dict):
        raise ConfigError("not a JSON object")
    quant = config.get("quantization_config")
    if isinstance(quant, dict):
        method = quant.get("quant_method", "unknown")
        raise ConfigError(
            f"checkpoint is already quantized (quant_method={method!r}); point Ridgeline at the "
            "16-bit weights and choose spec.quantization instead"
        )
    cfg = config
    if "num_hidden_layers" not in cfg and isinstance(cfg.get("text_config"), dict):
        cfg = {**cfg["text_config"], "architectures": config.get("architectures")}
    hidden = _int(cfg, "hidden_size", "n_embd", "d_model")
    heads = _int(cfg, "num_attention_heads", "n_head")
    kv_heads = _int(cfg, "num_key_value_heads", "num_kv_heads", default=heads)
    if heads % kv_heads:
        raise ConfigError(
            f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}"
        )
    # An explicit head_dim wins (Gemma-2: 256 with hidden 3584 and 16 heads).
    head_dim = _int(cfg, "head_dim", default=hidden // heads)
    archs = cfg.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs else str(cfg.get("model_type", "unknown"))
    tie = cfg.get("tie_word_embeddings")
    return {
        "architecture": str(arch),
        "num_layers": _int(cfg, "num_hidden_layers", "n_layer", "num_layers"),
        "hidden_size": hidden,
        "intermediate_size": _int(cfg, "intermediate_size", "n_inner", default=4 * hidden),
        "num_attention_heads": heads,
        "num_kv_heads": kv_heads,
        "head_dim": head_dim,
        "vocab_size": _int(cfg, "vocab_size"),
        "tied_embeddings": bool(tie) if tie is not None else False,
        "max_position_embeddings": cfg.get("max_position_embeddings")
        if isinstance(cfg.get("max_position_embeddings"), int)
        else None,
    }
