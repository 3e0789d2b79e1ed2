"""Architecture fields from a Hugging Face ``config.json``, with each family's quirks."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """What is wrong with config.json (the caller adds the file's URI)."""


# Past any real model (the largest vocabularies are ~2.6e5, context windows ~1e7); a larger
# number is a corrupt config, and unbounded ones overflow the planner's float arithmetic.
MAX_DIMENSION = 2**31


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _int(cfg: dict[str, Any], *keys: str, default: int | None = None) -> int:
    for key in keys:
        value = cfg.get(key)
        if value is not None:
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or not 0 < value <= MAX_DIMENSION
            ):
                raise ConfigError(
                    f"'{key}' must be a positive integer up to {MAX_DIMENSION}, got {_short(value)}"
                )
            return value
    if default is not None:
        return default
    raise ConfigError(f"missing '{keys[0]}'")


def _optional_int(value: object) -> int | None:
    """An informational field: kept when it is a plausible size, otherwise ignored."""
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_DIMENSION
    return value if ok and isinstance(value, int) else None


def architecture_fields(config: dict[str, Any]) -> dict[str, Any]:
    """The architecture as ModelShape fields. Multimodal configs nest the LM in text_config."""
    if not isinstance(config, dict):
        raise ConfigError("not a JSON object")
    quant = config.get("quantization_config")
    if isinstance(quant, dict):
        method = quant.get("quant_method", "unknown")
        raise ConfigError(
            f"checkpoint is already quantized (quant_method={_short(method)}); point Ridgeline "
            "at the 16-bit weights and choose spec.quantization instead"
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
    # An explicit head_dim wins (Gemma-2: 256 with hidden 3584 and 16 heads); otherwise the
    # heads split hidden_size evenly, as transformers requires.
    if cfg.get("head_dim") is None and hidden % heads:
        raise ConfigError(
            f"hidden_size={hidden} is not a multiple of num_attention_heads={heads} "
            "and no head_dim is given"
        )
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
        "max_position_embeddings": _optional_int(cfg.get("max_position_embeddings")),
    }
