"""A scripted run of the decode runner for the static-step and captured-step tests: tiny
random models, and prompts that join, decode their own greedy tokens and leave."""

from __future__ import annotations

from typing import Any

import torch

from ridgeline_serving.engine import attention
from ridgeline_serving.engine.runner import DecodeMode, TransformersRunner

SLOTS, CONTEXT, COLUMN_STEP = 4, 64, 32
VOCAB, WINDOW = 96, 12


def tiny_model(kind: str) -> Any:
    """Random weights of a tiny ``kind``: Llama (full attention), Mistral (every layer
    slides), Qwen2 (a full and a sliding layer). One layer where one shows the kind: each
    compile traces every layer."""
    from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

    common: dict[str, Any] = {
        "vocab_size": VOCAB,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2 if kind == "qwen2" else 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
    }
    if kind == "llama":
        config: Any = LlamaConfig(**common)
    elif kind == "mistral":
        config = MistralConfig(sliding_window=WINDOW, **common)
    else:
        config = Qwen2Config(
            use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1, **common
        )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attention.register())
    return model.eval()


# (step, prompts) joins; a row leaves when it reaches its length (prompt + outputs)
JOINS = {
    0: [[5, 6, 7], [8, 9]],
    6: [list(range(10, 30))],  # wider than the running rows: the columns shift right
    40: [[31, 32, 33, 34]],
    90: [[40, 41], [42, 43, 44, 45, 46, 47]],
    140: [[50] * 9],
}
LENGTHS = [30, 45, 60, 40, 55, 35, 50, 64]  # by join order; 64 = the context


class Driver:
    """One runner through ``JOINS``: each row decodes its own greedy tokens."""

    def __init__(self, runner: TransformersRunner) -> None:
        self.runner = runner
        self.tokens: list[int] = []  # each row's last token
        self.lengths: list[int] = []  # each row's tokens so far
        self.limits: list[int] = []
        self.joined = 0
        self.steps: list[list[int]] = []  # the tokens of every step
        self.logits: torch.Tensor | None = None  # the last decode step's

    def step(self, number: int) -> None:
        if self.tokens:
            logits = self.runner.decode(self.tokens)
            assert bool(torch.isfinite(logits).all())
            self.logits = logits
            self.tokens = logits.argmax(-1).tolist()
            self.lengths = [n + 1 for n in self.lengths]
            self.steps.append(self.tokens)
        if number in JOINS:
            group = self.runner.start(JOINS[number])
            logits = None
            while logits is None:
                logits = group.step(2048)[1]
            self.runner.join(group)
            self.tokens += logits.argmax(-1).tolist()
            self.lengths += [len(p) + 1 for p in JOINS[number]]
            self.limits += LENGTHS[self.joined : self.joined + group.rows]
            self.joined += group.rows
        keep = [i for i, n in enumerate(self.lengths) if n < self.limits[i]]
        if len(keep) < len(self.lengths):
            self.runner.keep(keep)
            for field in (self.tokens, self.lengths, self.limits):
                field[:] = [field[i] for i in keep]


def runner(model: Any, decode: DecodeMode, backend: Any = "inductor") -> TransformersRunner:
    return TransformersRunner(
        model,
        0,
        max_batch=SLOTS,
        kv_tokens=SLOTS * CONTEXT,
        max_context=CONTEXT,
        decode=decode,
        column_step=COLUMN_STEP,
        compile_backend=backend,
    )


ARCHITECTURES = ["llama", "mistral", "qwen2", "gemma2", "phi3", "gpt2", "gpt_neox", "falcon"]
ARCHITECTURES += ["mixtral"]


def sweep_config(kind: str, tok: Any) -> Any:
    """The smallest config of ``kind`` with grouped heads where the family has them."""
    from transformers import AutoConfig

    ids = {
        "vocab_size": len(tok),
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    if kind == "gpt2":
        return AutoConfig.for_model(kind, n_embd=32, n_layer=2, n_head=4, n_positions=256, **ids)
    sizes: dict[str, Any] = {
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 256,
    }
    if kind != "gpt_neox":
        sizes["num_key_value_heads"] = 1 if kind == "falcon" else 2
    if kind == "gemma2":
        sizes["head_dim"] = 8
    if kind == "falcon":  # the 40B layout: grouped KV heads, rotary positions
        sizes.update(new_decoder_architecture=True, num_kv_heads=2, ffn_hidden_size=48)
    if kind == "mixtral":
        sizes.update(num_local_experts=4, num_experts_per_tok=2)
    return AutoConfig.for_model(kind, **sizes, **ids)
