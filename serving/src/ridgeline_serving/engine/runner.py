"""The model runner the scheduler calls (``scheduler.ModelRunner``): prefill groups, the
running batch's joins and leaves, and each decode step's forward."""

from __future__ import annotations

from typing import Any

import torch

from ridgeline_serving.engine import kv_layers
from ridgeline_serving.engine.prefill import PrefillGroup
from ridgeline_serving.engine.slot_cache import SlotBatch


class TransformersRunner:
    """The model side of the scheduling loop: prefill groups, the running batch, decode."""

    def __init__(
        self, model: Any, pad_id: int, *, max_batch: int, kv_tokens: int, max_context: int
    ) -> None:
        self.model = model
        self.pad_id = pad_id
        self.device: torch.device = next(model.parameters()).device
        self.running = SlotBatch(
            model,
            pad_id,
            max_slots=max_batch,
            max_columns=min(kv_tokens // max_batch, max_context),
            # raises at load time for a model whose layers cannot be held (kv_layers.py)
            window=kv_layers.sliding_window(model.config),
        )

    def start(self, prompts: list[list[int]]) -> PrefillGroup:
        return PrefillGroup(self.model, prompts, self.pad_id)

    def join(self, group: PrefillGroup) -> None:
        self.running.join(group)

    def decode(self, tokens: list[int]) -> torch.Tensor:
        ids = torch.tensor(tokens, dtype=torch.long).to(self.device, non_blocking=True)
        return self.running.decode(ids)

    def keep(self, rows: list[int]) -> None:
        self.running.keep(rows)
