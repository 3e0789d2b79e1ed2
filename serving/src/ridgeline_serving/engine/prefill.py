"""A group of prompts prefilled together before they join the running batch."""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicCache


def full_length_cache() -> Any:
    """A cache of full-length ``DynamicLayer``s, whatever the model's layer kinds: without a
    config, ``DynamicCache`` makes no ``DynamicSlidingWindowLayer`` (one cuts its columns to
    the last window at every step, which the slot buffers here, written in place, do not do).
    The model's sliding-window masks keep the attention exact (``kv_layers.py``)."""
    return DynamicCache()


class PrefillGroup:
    """Prompts being prefilled together (left-padded, in their own cache), a chunk per step."""

    def __init__(self, model: Any, prompts: list[list[int]], pad_id: int) -> None:
        device = next(model.parameters()).device
        longest = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), longest), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, longest - len(prompt) :] = torch.tensor(prompt)
            mask[row, longest - len(prompt) :] = 1
        self.model = model
        self.ids = ids.to(device)
        self.mask = mask.to(device)
        self.positions = (self.mask.cumsum(-1) - 1).clamp(min=0)  # on the model's device
        self.cache = full_length_cache()
        self.done = 0

    @property
    def rows(self) -> int:
        return int(self.ids.shape[0])

    @property
    def remaining(self) -> int:
        return int(self.ids.shape[1]) - self.done

    @torch.inference_mode()
    def step(self, budget_tokens: int) -> tuple[int, torch.Tensor | None]:
        """Run the next chunk within the token budget: (tokens run, last logits when done)."""
        width = max(1, min(self.remaining, budget_tokens // self.rows))
        end = self.done + width
        out = self.model(
            input_ids=self.ids[:, self.done : end],
            attention_mask=self.mask[:, :end],
            position_ids=self.positions[:, self.done : end],
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.done = end
        if self.remaining:
            return width * self.rows, None
        return width * self.rows, out.logits[:, -1, :]
