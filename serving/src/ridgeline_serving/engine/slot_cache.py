"""The running batch's KV cache for any transformers causal LM, in preallocated slots.

Every layer's keys and values live in one buffer (slots x heads x columns x head dim). All
slots write the same column each decode step, in place (no per-step concatenation); a row's
tokens are right-aligned to that column and an attention mask (kept beside the buffer, updated
per column and per membership change) hides the columns before its prompt. A sequence that
joins takes a free slot (its prefilled KV copied in); one that leaves frees its slot at once
for the next, without moving anyone else's KV. When the columns run out, those no running row
uses any more are dropped (a shift left).

The buffers are the plan's KV cache, allocated once, at the first join (the replica's
warm-up): a slot for each sequence of the planned batch and a column for each token of the
context, which is the KV the planner counts for that batch (and never more than the plan's
KV tokens, ``maxBatchByMemory`` x context). Buffers that doubled as the batch grew reached
2.5-2.7x the plan with mixed lengths (columns of rows that had left, doubling past the
need), plus a copy beside the old one at each growth. Every row is at most the context
long, so the newest column minus the oldest one a running row still uses never exceeds it:
dropping unused columns always makes room. Only a plan below one context per slot (a
test's) makes the buffer grow. Beside it, a prompt group being prefilled holds its own KV
until it joins (``prefill.PrefillGroup``; the planner's workspace counts it).

Sliding-window and hybrid models (Mistral, Qwen2 with ``use_sliding_window``, Gemma-2/3) are
batched the same way: every layer keeps full-length columns and the model's own sliding-window
mask hides the columns outside the window (``kv_layers.py`` says why that is exact, and refuses
the layer kinds for which it is not, at load time). A sliding layer so holds more than its
window; that is accepted because the planner and the scheduler's KV budget count every layer
at full length anyway (so nothing is over-committed), and one buffer for all layers keeps a
single column index for the mask. When every layer slides, the columns behind the window are
dropped with the unused ones, so a decode step reads no more than the widest prompt or about
the window, however long the outputs.

Why not transformers' paged cache: it is what ``ContinuousBatchingManager`` uses, and that was
measured against this (``make bench``); this layout works with every model class and with
bitsandbytes' int8 and nf4 layers unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicLayer

from ridgeline_serving.engine import attention, kv_layers
from ridgeline_serving.engine.prefill import PrefillGroup, full_length_cache

# Columns added beyond a prompt wider than a buffer below one context per slot (a test's).
HEADROOM_COLUMNS = 64


class SlotLayer(DynamicLayer):
    """A layer whose keys and values are views of the first ``rows`` slots and ``end`` columns
    of preallocated buffers; ``update`` writes the new columns in place."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.key_buffer, self.value_buffer = keys, values
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self.rows = 0
        self.end = 0
        self.refresh()

    def refresh(self) -> None:
        self.keys = self.key_buffer[: self.rows, :, : self.end]
        self.values = self.value_buffer[: self.rows, :, : self.end]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        new = key_states.shape[-2]
        self.key_buffer[: self.rows, :, self.end : self.end + new] = key_states
        self.value_buffer[: self.rows, :, self.end : self.end + new] = value_states
        self.end += new
        self.refresh()
        return self.key_buffer[: self.rows, :, : self.end], self.value_buffer[
            : self.rows, :, : self.end
        ]


class SlotBatch:
    """The running sequences in slots; logical rows (the scheduler's order) map to slots."""

    def __init__(
        self,
        model: Any,
        pad_id: int,
        *,
        max_slots: int,
        max_columns: int,
        window: int | None = None,
    ) -> None:
        self.model = model
        self.pad_id = pad_id
        # the buffers' size (the module's docstring): the planned batch by the context, or
        # fewer columns where the plan's KV tokens give each slot less
        self.max_slots, self.max_columns = max_slots, max_columns
        # set when every layer slides: columns further back than it are never read again
        self.window = window
        # decode passes its own 4D mask (``_decode_mask``) where it is all the model would build
        self.own_decode_mask = (
            kv_layers.full_attention_only(model.config)
            and getattr(model.config, "_attn_implementation", None) in (attention.NAME, "sdpa")
            and attention.takes_attention_functions(type(model))  # not Falcon's ALiBi mask
        )
        self.device: torch.device = next(model.parameters()).device
        self.cache: Any = full_length_cache()
        self.layers: list[SlotLayer] = []
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)
        self.positions = torch.zeros(0, dtype=torch.long, device=self.device)
        self.slot_of: list[int] = []  # logical row -> slot
        self.end = 0  # the column the next decode step writes
        self._index: torch.Tensor | None = None  # slot_of on the device; None when 0..n-1
        # counts buffer (re)allocations: a captured step holds the addresses of the old ones
        self.generation = 0

    @property
    def rows(self) -> int:
        return len(self.slot_of)

    @property
    def slots(self) -> int:
        return int(self.mask.shape[0])

    @property
    def columns(self) -> int:
        return int(self.mask.shape[1])

    @property
    def span(self) -> int:
        """Slots a forward runs over: up to the highest one in use."""
        return max(self.slot_of) + 1 if self.slot_of else 0

    @torch.inference_mode()
    def join(self, group: PrefillGroup) -> None:
        width = int(group.mask.shape[1])
        layers: list[Any] = group.cache.layers  # full-length DynamicLayers (full_length_cache)
        if not self.layers:
            self._allocate(layers, max(group.rows, self.max_slots), max(width, self.max_columns))
        free = sorted(set(range(self.slots)) - set(self.slot_of))
        if len(free) < group.rows:  # only past the planned batch, which the scheduler keeps
            self._resize(self.rows + group.rows, self.columns)
            free = sorted(set(range(self.slots)) - set(self.slot_of))
        if self.end < width:  # room on the left for the new prompts
            self._shift(width - self.end)
        chosen = free[: group.rows]
        index = torch.tensor(chosen, device=self.device)
        start = self.end - width
        for mine, theirs in zip(self.layers, layers, strict=True):
            mine.key_buffer[index, :, start : self.end] = theirs.keys
            mine.value_buffer[index, :, start : self.end] = theirs.values
        self.mask[index] = 0
        self.mask[index, start : self.end] = group.mask
        self.positions[index] = group.positions[:, -1] + 1
        self._membership(self.slot_of + chosen)

    @torch.inference_mode()
    def keep(self, rows: list[int]) -> None:
        """Keep logical ``rows`` (in that order); the others' slots are free at once."""
        self._membership([self.slot_of[i] for i in rows])
        if not self.slot_of:  # the buffers stay (the plan's, for the replica's life)
            self.end = 0

    def slot_index(self) -> torch.Tensor | None:
        """The rows' slots on the device; None when row i is in slot i."""
        return self._index

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """One token for every row: written in place at the next column; the next logits."""
        if self.end == self.columns:
            self.make_room()
        span = self.span
        if self._index is None:
            ids = tokens.view(-1, 1)
        else:
            ids = torch.full((span, 1), self.pad_id, dtype=torch.long, device=self.device)
            ids[self._index, 0] = tokens
        # free slots below the span compute too (masked to their own finite columns)
        self.mask[:span, self.end] = 1
        for layer in self.layers:
            layer.rows, layer.end = span, self.end
            layer.refresh()
        out = self.model(
            input_ids=ids,
            attention_mask=self._decode_mask(self.mask[:span, : self.end + 1]),
            position_ids=self.positions[:span].view(-1, 1),
            past_key_values=self.cache,
            use_cache=True,
        )
        self.end += 1
        self.positions[:span] += 1
        logits: torch.Tensor = out.logits[:, -1, :]
        return logits if self._index is None else logits.index_select(0, self._index)

    def _decode_mask(self, padding: torch.Tensor) -> torch.Tensor | None:
        """The mask of a decode step. With one query token per row at the newest column, on
        full-attention layers under SDPA, the model's own mask is the padding mask broadcast to
        4D, or none when nothing is padded; transformers builds it each forward with a dozen
        small operations and their Python, a tenth of a small model's step on a CPU (and host
        time on a GPU). Built here, the model takes it as is. Any other model gets the 2D mask
        and builds its own (sliding windows, eager attention's additive mask)."""
        if not self.own_decode_mask:
            return padding
        if int(padding.sum()) == padding.numel():  # as transformers checks (fast_all)
            return None
        return padding.bool()[:, None, None, :]

    # ---- layout ------------------------------------------------------------------------

    def _membership(self, slot_of: list[int]) -> None:
        self.slot_of = slot_of
        if slot_of == list(range(len(slot_of))):
            self._index = None
        else:
            self._index = torch.tensor(slot_of, device=self.device)

    def _allocate(self, layers: list[Any], slots: int, columns: int) -> None:
        self.layers = []
        for layer in layers:
            shape = (slots, layer.keys.shape[1], columns, layer.keys.shape[3])
            keys = torch.zeros(shape, dtype=layer.keys.dtype, device=layer.keys.device)
            shape = (slots, layer.values.shape[1], columns, layer.values.shape[3])
            values = torch.zeros(shape, dtype=layer.values.dtype, device=layer.values.device)
            self.layers.append(SlotLayer(keys, values))
        self.cache.layers = self.layers
        self.mask = torch.zeros((slots, columns), dtype=torch.long, device=self.device)
        self.positions = torch.zeros(slots, dtype=torch.long, device=self.device)
        self.generation += 1

    def _resize(self, slots: int, columns: int) -> None:
        """New buffers, the used columns copied to their start."""
        rows, end = min(slots, self.slots), min(self.end, columns)
        first = self.end - end
        for layer in self.layers:
            for name in ("key_buffer", "value_buffer"):
                old: torch.Tensor = getattr(layer, name)
                new = old.new_zeros((slots, old.shape[1], columns, old.shape[3]))
                new[:rows, :, :end] = old[:rows, :, first : self.end]
                setattr(layer, name, new)
        mask = self.mask.new_zeros((slots, columns))
        mask[:rows, :end] = self.mask[:rows, first : self.end]
        positions = self.positions.new_zeros(slots)
        positions[:rows] = self.positions[:rows]
        self.mask, self.positions, self.end = mask, positions, end
        self.generation += 1

    def _shift(self, by: int) -> None:
        """Move every column ``by`` to the right (room for a longer prompt)."""
        if self.end + by > self.columns:  # only a plan below one context per slot
            self._resize(self.slots, self.end + by + HEADROOM_COLUMNS)
        for layer in self.layers:
            for buffer in (layer.key_buffer, layer.value_buffer):
                buffer[:, :, by : by + self.end] = buffer[:, :, : self.end].clone()
                buffer[:, :, :by] = 0
        self.mask[:, by : by + self.end] = self.mask[:, : self.end].clone()
        self.mask[:, :by] = 0
        self.end += by

    def make_room(self) -> None:
        """The columns are full: drop those no running row uses (or, below one context per
        slot, double them). Columns past the new end are masked: a static decode step reads a
        whole bucket of columns, not just those up to the end."""
        live = self.mask[torch.tensor(self.slot_of, device=self.device), : self.end]
        used = live.any(dim=0)
        first = int(used.int().argmax()) if bool(used.any()) else self.end
        if self.window is not None:  # the next query (column end) sees end - window + 1 on
            first = max(first, self.end - self.window + 1)
        if first == 0:  # every column is in use: only a plan below one context per slot
            self._resize(self.slots, 2 * self.columns)
        if first > 0:
            kept, span = self.end - first, self.span  # free slots above the span hold nothing
            for layer in self.layers:  # (a layer's copy at a time: a small transient)
                for buffer in (layer.key_buffer, layer.value_buffer):
                    buffer[:span, :, :kept] = buffer[:span, :, first : self.end].clone()
            self.mask[:, :kept] = self.mask[:, first : self.end].clone()
            self.mask[:, kept:] = 0
            self.end = kept
