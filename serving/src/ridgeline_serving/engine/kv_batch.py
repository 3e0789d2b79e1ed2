"""The running batch's KV cache for any transformers causal LM: rows left-padded to a common
length, with an attention mask and per-row positions. Sequences join by concatenation (the
shorter side padded on the left) and leave by row selection, which also drops the padding
columns no row needs any more, so a finished sequence's memory is freed at once.

Why not transformers' paged cache: it is what ``ContinuousBatchingManager`` uses, and that was
measured against this (``make bench``); this layout works with every model class and with
bitsandbytes' int8 and nf4 layers unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional


@dataclass
class KvBatch:
    cache: Any  # transformers DynamicCache
    mask: torch.Tensor  # rows x length, 1 where a real token is cached
    positions: torch.Tensor  # rows: the position of each row's next token

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])


def _layers(cache: Any) -> list[Any]:
    layers: list[Any] = cache.layers
    for layer in layers:
        if type(layer).__name__ != "DynamicLayer":
            raise NotImplementedError(
                f"{type(layer).__name__} caches (sliding-window or hybrid attention) cannot be "
                "batched continuously yet"
            )
    return layers


def _pad_left(t: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - t.shape[dim]
    if missing == 0:
        return t
    pad = [0, 0] * (t.dim() - 1 - dim) + [missing, 0]
    return functional.pad(t, pad)


def merge(a: KvBatch | None, b: KvBatch) -> KvBatch:
    """Rows of ``a`` then rows of ``b``, in one cache."""
    if a is None or a.rows == 0:
        return b
    length = max(a.length, b.length)
    for la, lb in zip(_layers(a.cache), _layers(b.cache), strict=True):
        la.keys = torch.cat([_pad_left(la.keys, length, 2), _pad_left(lb.keys, length, 2)])
        la.values = torch.cat([_pad_left(la.values, length, 2), _pad_left(lb.values, length, 2)])
    mask = torch.cat([_pad_left(a.mask, length, 1), _pad_left(b.mask, length, 1)])
    return KvBatch(a.cache, mask, torch.cat([a.positions, b.positions]))


def select(batch: KvBatch, rows: list[int]) -> KvBatch | None:
    """Keep ``rows`` (in that order) and drop the columns only the others used."""
    if not rows:
        return None
    index = torch.tensor(rows, device=batch.mask.device)
    mask = batch.mask.index_select(0, index)
    used = mask.any(dim=0)
    first = int(used.int().argmax()) if bool(used.any()) else mask.shape[1]
    for layer in _layers(batch.cache):
        layer.keys = layer.keys.index_select(0, index)[:, :, first:]
        layer.values = layer.values.index_select(0, index)[:, :, first:]
    return KvBatch(batch.cache, mask[:, first:], batch.positions.index_select(0, index))


class PrefillGroup:
    """Prompts being prefilled together, a chunk per engine step."""

    def __init__(self, model: Any, prompts: list[list[int]], pad_id: int) -> None:
        from transformers import DynamicCache

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
        self.cache = DynamicCache(config=model.config)
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

    def batch(self) -> KvBatch:
        return KvBatch(self.cache, self.mask, self.positions[:, -1] + 1)


@torch.inference_mode()
def decode(model: Any, batch: KvBatch, tokens: torch.Tensor) -> torch.Tensor:
    """One token for every row: appends it to the cache and returns the next logits."""
    ones = torch.ones((batch.rows, 1), dtype=batch.mask.dtype, device=batch.mask.device)
    batch.mask = torch.cat([batch.mask, ones], 1)
    out = model(
        input_ids=tokens.view(-1, 1),
        attention_mask=batch.mask,
        position_ids=batch.positions.view(-1, 1),
        past_key_values=batch.cache,
        use_cache=True,
    )
    batch.positions = batch.positions + 1
    logits: torch.Tensor = out.logits[:, -1, :]
    return logits


class TransformersRunner:
    """The model side of the scheduling loop: prefill groups, the running batch, decode."""

    def __init__(self, model: Any, pad_id: int) -> None:
        self.model = model
        self.pad_id = pad_id
        self.device: torch.device = next(model.parameters()).device
        self.running: KvBatch | None = None

    def start(self, prompts: list[list[int]]) -> PrefillGroup:
        return PrefillGroup(self.model, prompts, self.pad_id)

    def join(self, group: PrefillGroup) -> None:
        self.running = merge(self.running, group.batch())

    def decode(self, tokens: list[int]) -> torch.Tensor:
        assert self.running is not None
        ids = torch.tensor(tokens, dtype=torch.long).to(self.device, non_blocking=True)
        return decode(self.model, self.running, ids)

    def keep(self, rows: list[int]) -> None:
        if self.running is not None:
            self.running = select(self.running, rows)
