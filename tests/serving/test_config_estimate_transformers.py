"""The config-only parameter count against transformers' own model classes (instantiated on
the meta device: shapes, no memory), for every example model and every family the estimator
names as known."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ridgeline.shape import ParamsSource
from ridgeline.shape.config_estimate import estimate_model_shape

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples" / "models").glob("*/config.json"))
SMALL = {
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 100,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}
MOE = {"moe_intermediate_size": 32, "num_experts": 4, "num_experts_per_tok": 2}
FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {"attention_bias": True, "mlp_bias": True},
    "mistral": {},
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2": {"tie_word_embeddings": True},
    "qwen2_moe": {**MOE, "shared_expert_intermediate_size": 128},
    "qwen3": {"head_dim": 32},
    "qwen3_moe": {**MOE, "head_dim": 16},
    "gemma": {"head_dim": 16},
    "gemma2": {"head_dim": 32},
    "gemma3_text": {"head_dim": 16},
    "phi3": {},
    "olmo2": {},
}


def transformers_params(config: dict[str, Any]) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    # parameters() yields a tied weight once, as a checkpoint stores it.
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.parent.name)
def test_examples_match_transformers_within_1_percent(path: Path) -> None:
    config = json.loads(path.read_text())
    exact = transformers_params(config)
    assert estimate_model_shape(config).num_params == pytest.approx(exact, rel=0.01)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_known_families_match_transformers(family: str) -> None:
    config = {**SMALL, **FAMILIES[family], "model_type": family}
    shape = estimate_model_shape(config)
    assert shape.params_source is ParamsSource.CONFIG
    assert shape.num_params == transformers_params(config)
