"""A model's tensors counted from config.json alone, for planning before any weights exist.

The tensors are those of the Hugging Face implementation of each family, one per weight
matrix, so that the planner sees the same roles (embedding, lm_head, linear, norms and biases)
and the same matrix shapes as it would from the safetensors headers:

- embeddings ``vocab x hidden``; an lm_head of the same shape unless the embeddings are tied;
- attention: q ``heads x head_dim``, k and v ``kv_heads x head_dim``, o back to ``hidden``;
  q/k/v biases for Qwen2 (and all four with ``attention_bias``); q/k norms for Qwen3, Gemma-3
  and OLMo-2;
- MLP with its gate: gate, up and down (Phi-3 fuses q/k/v and gate/up: the same count);
  ``mlp_bias`` adds their biases;
- mixture of experts: a router ``experts x hidden`` and each expert's gate/up/down
  (``moe_intermediate_size`` where the config has it), plus Qwen-MoE's shared expert;
- RMS norms: two per layer (four for Gemma-2 and Gemma-3) and the final one.

Exact against transformers' own models for every family named here, and within 1% of the
checkpoint for every example (tests/unit/test_config_estimate.py,
tests/serving/test_config_estimate_transformers.py); an unknown ``model_type`` is counted as a
Llama-style decoder, which the reasons say.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ridgeline.shape.config_json import architecture_fields
from ridgeline.shape.model_shape import ModelShape, ParamsSource
from ridgeline.shape.safetensors_header import TensorInfo

# config.json's torch_dtype (or dtype) as a safetensors dtype; bf16 when it says nothing.
_DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}
_KNOWN_FAMILIES = frozenset(
    {
        "llama",
        "mistral",
        "mixtral",
        "qwen2",
        "qwen2_moe",
        "qwen3",
        "qwen3_moe",
        "gemma",
        "gemma2",
        "gemma3_text",
        "phi3",
        "olmo2",
    }
)
_FOUR_NORMS = frozenset({"gemma2", "gemma3_text"})
# q/k RMS norms over one head (Qwen3, Gemma-3) or over all heads (OLMo-2).
_QK_NORM_PER_HEAD = frozenset({"qwen3", "qwen3_moe", "gemma3_text"})
_QK_NORM_ALL_HEADS = frozenset({"olmo2"})


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    text = config.get("text_config")
    if "num_hidden_layers" not in config and isinstance(text, dict):
        return text
    return config


def _dtype(cfg: dict[str, Any], outer: dict[str, Any]) -> str:
    for source in (cfg, outer):
        name = source.get("torch_dtype") or source.get("dtype")
        if isinstance(name, str) and name in _DTYPES:
            return _DTYPES[name]
    return "BF16"


def model_family(config: dict[str, Any]) -> str:
    return str(_text_config(config).get("model_type", "unknown"))


def is_known_family(config: dict[str, Any]) -> bool:
    return model_family(config) in _KNOWN_FAMILIES


def _experts(cfg: dict[str, Any]) -> int:
    for key in ("num_local_experts", "num_experts", "n_routed_experts"):
        value = cfg.get(key)
        if isinstance(value, int) and value > 1:
            return value
    return 0


def estimated_tensors(config: dict[str, Any]) -> Iterator[TensorInfo]:
    """The tensors a checkpoint of this config holds, by name, dtype and shape."""
    arch = architecture_fields(config)
    cfg = _text_config(config)
    family = str(cfg.get("model_type", "unknown"))
    dtype = _dtype(cfg, config)
    hidden, vocab = arch["hidden_size"], arch["vocab_size"]
    heads, kv_heads, head_dim = arch["num_attention_heads"], arch["num_kv_heads"], arch["head_dim"]
    inter = arch["intermediate_size"]
    qkv_bias = family == "qwen2" or family == "qwen2_moe" or bool(cfg.get("attention_bias"))
    o_bias = bool(cfg.get("attention_bias"))
    mlp_bias = bool(cfg.get("mlp_bias"))
    experts = _experts(cfg)
    expert_inter = cfg.get("moe_intermediate_size") or inter

    def t(name: str, *shape: int) -> TensorInfo:
        return TensorInfo(name=name, dtype=dtype, shape=tuple(shape))

    def mlp(prefix: str, width: int) -> Iterator[TensorInfo]:
        for proj, shape in (("gate", (width, hidden)), ("up", (width, hidden))):
            yield t(f"{prefix}.{proj}_proj.weight", *shape)
            if mlp_bias:
                yield t(f"{prefix}.{proj}_proj.bias", width)
        yield t(f"{prefix}.down_proj.weight", hidden, width)
        if mlp_bias:
            yield t(f"{prefix}.down_proj.bias", hidden)

    yield t("model.embed_tokens.weight", vocab, hidden)
    for i in range(arch["num_layers"]):
        p = f"model.layers.{i}"
        norms = ["input_layernorm", "post_attention_layernorm"]
        if family in _FOUR_NORMS:
            norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
        for norm in norms:
            yield t(f"{p}.{norm}.weight", hidden)
        for proj, n in (("q", heads), ("k", kv_heads), ("v", kv_heads)):
            yield t(f"{p}.self_attn.{proj}_proj.weight", n * head_dim, hidden)
            if qkv_bias:
                yield t(f"{p}.self_attn.{proj}_proj.bias", n * head_dim)
        yield t(f"{p}.self_attn.o_proj.weight", hidden, heads * head_dim)
        if o_bias:
            yield t(f"{p}.self_attn.o_proj.bias", hidden)
        if family in _QK_NORM_PER_HEAD:
            yield t(f"{p}.self_attn.q_norm.weight", head_dim)
            yield t(f"{p}.self_attn.k_norm.weight", head_dim)
        elif family in _QK_NORM_ALL_HEADS:
            yield t(f"{p}.self_attn.q_norm.weight", heads * head_dim)
            yield t(f"{p}.self_attn.k_norm.weight", kv_heads * head_dim)
        if not experts:
            yield from mlp(f"{p}.mlp", inter)
            continue
        yield t(f"{p}.mlp.gate.weight", experts, hidden)
        for e in range(experts):
            yield from mlp(f"{p}.mlp.experts.{e}", expert_inter)
        shared = cfg.get("shared_expert_intermediate_size")
        if isinstance(shared, int) and shared > 0:
            yield from mlp(f"{p}.mlp.shared_expert", shared)
            yield t(f"{p}.mlp.shared_expert_gate.weight", 1, hidden)
    yield t("model.norm.weight", hidden)
    if not arch["tied_embeddings"]:
        yield t("lm_head.weight", vocab, hidden)


def estimate_reason(shape: ModelShape) -> str | None:
    """What a plan's reasons say about an estimated shape; None for one read from headers."""
    if shape.params_source is ParamsSource.SAFETENSORS:
        return None
    how = (
        "counted from its architecture"
        if shape.params_source is ParamsSource.CONFIG
        else f"counted as a Llama-style decoder ({shape.architecture} is not a family the "
        "estimator knows)"
    )
    return (
        f"Weight bytes estimated from config.json: no safetensors weights were found, so the "
        f"{shape.num_params / 1e9:.2f}B parameters are {how}; the headers, once there, give the "
        "exact count."
    )


def estimate_model_shape(config: dict[str, Any]) -> ModelShape:
    """The shape the planner needs, from config.json alone (no weights read)."""
    return ModelShape.from_parts(
        architecture_fields(config),
        estimated_tensors(config),
        params_source=ParamsSource.CONFIG if is_known_family(config) else ParamsSource.CONFIG_GUESS,
    )
