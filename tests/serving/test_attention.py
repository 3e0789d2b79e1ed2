"""The grouped decode attention gives what transformers' ``sdpa`` path (which copies the KV
once per query head under a mask) gives, and the engine loads its models with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from ridgeline.api import Quantization
from ridgeline_serving.engine import attention
from ridgeline_serving.engine.transformers_engine import TransformersEngine


class Attn(torch.nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


def padded_mask(
    starts: list[int], tokens: int, columns: int, window: int | None = None
) -> torch.Tensor:
    """Rows that begin at different columns (a running batch), causal over the new tokens,
    each token seeing at most ``window`` columns back to itself when one is given."""
    mask = torch.zeros((len(starts), 1, tokens, columns), dtype=torch.bool)
    for row, start in enumerate(starts):
        for t in range(tokens):
            end = columns - tokens + t + 1
            mask[row, 0, t, max(start, end - (window or end)) : end] = True
    return mask


@pytest.mark.parametrize(
    ("heads", "kv_heads", "tokens", "window"),
    [(8, 2, 1, None), (8, 1, 1, None), (4, 4, 1, None), (8, 2, 5, None), (8, 2, 1, 3)],
)
def test_grouped_decode_attention_matches_sdpa(
    heads: int, kv_heads: int, tokens: int, window: int | None
) -> None:
    """With a sliding window too (the masks transformers builds for sliding layers)."""
    torch.manual_seed(0)
    batch, columns, dim = 3, 11, 16
    query = torch.randn(batch, heads, tokens, dim)
    key = torch.randn(batch, kv_heads, columns, dim)
    value = torch.randn(batch, kv_heads, columns, dim)
    mask = padded_mask([0, 4, 9], tokens, columns, window)
    module = Attn(heads // kv_heads)
    got, _ = attention.grouped_decode_attention(module, query, key, value, mask, scaling=0.25)
    want, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.25)
    assert got.shape == (batch, tokens, heads, dim)
    torch.testing.assert_close(got, want)
    # the padded columns count for nothing: changing them changes nothing
    key2, value2 = key.clone(), value.clone()
    key2[1, :, :4] += 100
    value2[1, :, :4] -= 100
    again, _ = attention.grouped_decode_attention(module, query, key2, value2, mask, scaling=0.25)
    torch.testing.assert_close(again, got)


def test_the_engine_loads_models_with_it(tiny_dir: Path) -> None:
    engine = TransformersEngine(tiny_dir, "tiny", Quantization.NONE, "float32", 0, 256)
    try:
        assert engine.model.config._attn_implementation == attention.NAME
        assert not torch.backends.cuda.cudnn_sdp_enabled()  # no graph build per KV length
        assert engine.model.config.num_key_value_heads < engine.model.config.num_attention_heads
    finally:
        engine.close()


def test_only_classes_that_run_on_sdpa_get_it() -> None:
    """Gemma-2 soft-caps its attention logits and gpt-oss adds attention sinks, which neither
    SDPA nor the grouped function does: those keep transformers' own attention."""
    from transformers import AutoConfig

    for model_type in ("llama", "mistral", "qwen2", "gemma3_text"):
        assert attention.handles(AutoConfig.for_model(model_type))
    for model_type in ("gemma2", "gpt_oss"):
        assert not attention.handles(AutoConfig.for_model(model_type))
    # Falcon runs on SDPA but keeps its own attention classes: a registered name is a KeyError
    assert not attention.handles(AutoConfig.for_model("falcon"))


def test_decode_with_its_own_mask_gives_the_models_own_logits(tiny_dir: Path) -> None:
    """The running batch builds a decode step's 4D mask itself (or none when nothing is
    padded); the logits are those of transformers' own mask, with rows that started at
    different columns and with a batch that started together."""
    from ridgeline_serving.engine.runner import TransformersRunner

    engine = TransformersEngine(tiny_dir, "tiny", Quantization.NONE, "float32", 0, 256)

    def decode_steps(own: bool, groups: list[list[list[int]]]) -> list[torch.Tensor]:
        runner = TransformersRunner(
            engine.model,
            int(engine.tokenizer.pad_token_id),
            max_batch=4,
            kv_tokens=256,
            max_context=64,
        )
        assert runner.running.own_decode_mask  # a full-attention model under SDPA
        runner.running.own_decode_mask = own
        for prompts in groups:
            group = runner.start(prompts)
            while group.step(2048)[1] is None:
                pass
            runner.join(group)
        tokens = [5] * sum(map(len, groups))
        steps = []
        for _ in range(3):
            logits = runner.decode(tokens)
            steps.append(logits)
            tokens = logits.argmax(dim=-1).tolist()
        return steps

    try:
        for groups in (
            [[[5, 6, 7, 8, 9]], [[10, 11], [12, 13, 14]]],  # padded: rows start apart
            [[[5, 6, 7], [8, 9, 10]]],  # nothing padded: no mask at all
        ):
            for ours, theirs in zip(
                decode_steps(True, groups), decode_steps(False, groups), strict=True
            ):
                torch.testing.assert_close(ours, theirs)
    finally:
        engine.close()
