"""The decode step in a static form, which a CUDA graph can capture and ``torch.compile`` can
trace whole.

The eager step (``SlotBatch.decode``) slices the running batch's buffers at Python ints that
change every step (the write column, the rows in use) and lets transformers build its mask.
Captured, those ints would be frozen at their values of the capture. Here everything that
changes per step lives in a fixed device buffer, updated in place before the step: the token
ids (``ids``), the write column (``end``), the positions and the mask (the running batch's own
``[slots, columns]`` buffers). The step itself has no ``.item()``, no branch on a tensor and no
shape that depends on data; the only Python ints in it are its bucket, ``rows`` by ``cols``:

- rows are padded to a bucket (1, 2, 4, 8, then every 8 up to the planned batch). The padding
  rows are free slots: they compute on whatever they hold and are dropped. Every row of the
  bucket sees its write column (the step marks it in the mask), so none is fully masked (SDPA
  returns NaN for such a row, and a NaN written into the KV would reach its next occupant);
- the columns a step reads are bucketed too (multiples of ``column_step`` up to the buffer's
  width), so short sequences do not read the whole context. The mask hides what lies past the
  write column (``SlotBatch.make_room`` clears it when it compacts).

The mask goes to the model prebuilt, in 4D, as transformers takes it as is: the padding mask
for full-attention layers and, for sliding-window layers, the padding mask within the window
of the write column (what ``masking_utils``' sliding-window overlay keeps: columns after
``end - window``); a hybrid model gets both by layer kind. Compaction, joins and leaves stay
outside the step (they run between steps, in Python, as before).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer, get_layer_types_and_kwargs

from ridgeline_serving.engine import attention, kv_layers
from ridgeline_serving.engine.slot_cache import SlotBatch

log = logging.getLogger("ridgeline.engine")

# Columns a static step reads are a multiple of this (or the whole buffer).
COLUMN_STEP = 256


def row_buckets(max_rows: int) -> list[int]:
    """1, 2, 4, 8, then every 8, up to and including ``max_rows``."""
    buckets = [b for b in (1, 2, 4) if b < max_rows] + list(range(8, max_rows, 8))
    return [*buckets, max_rows]


def column_buckets(columns: int, step: int) -> list[int]:
    """Multiples of ``step`` below ``columns``, then ``columns``."""
    return [*range(step, columns, step), columns]


def bucket(n: int, buckets: list[int]) -> int | None:
    """The smallest bucket that holds ``n``; None when none does."""
    return next((b for b in buckets if b >= n), None)


def not_static(model: Any) -> str | None:
    """Why this model's decode step cannot run static (and so cannot be captured); None when
    it can."""
    config = model.config
    if not attention.takes_attention_functions(type(model)):
        return "its class builds its own attention masks (it takes no prebuilt ones)"
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in (attention.NAME, "sdpa"):
        # eager attention adds a float mask it builds itself; other kernels take none
        return f"attention {implementation!r} (the static step passes SDPA's boolean masks)"
    if len({p.device for p in model.parameters()}) > 1:
        return "the model is split over several devices"
    for module in model.modules():
        state = getattr(module, "state", None)
        if type(module).__name__ == "Linear8bitLt" and getattr(state, "threshold", 0) > 0:
            # its outlier columns are found with outliers.any() and argwhere: host syncs
            return "LLM.int8 with an outlier threshold synchronises with the host"
    return None


class StaticLayer(DynamicLayer):
    """A layer over the running batch's buffers: ``update`` writes the new keys and values at
    the column in ``column`` (a device tensor) and returns the bucket's rows and columns."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, column: torch.Tensor) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.key_buffer, self.value_buffer, self.column = keys, values, column
        self.keys, self.values = keys, values
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self.rows = self.cols = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys = self.key_buffer[: self.rows]
        values = self.value_buffer[: self.rows]
        keys.index_copy_(2, self.column, key_states)
        values.index_copy_(2, self.column, value_states)
        return keys[:, :, : self.cols], values[:, :, : self.cols]


class StaticDecode:
    """The running batch's decode step with its per-step values in device buffers.

    ``forward(rows, cols)`` is the static step (what is compiled or captured); ``prepare``
    and ``finish`` are the Python around it."""

    def __init__(
        self, batch: SlotBatch, *, column_step: int = COLUMN_STEP, max_rows: int = 512
    ) -> None:
        self.batch = batch
        self.model = batch.model
        self.column_step = column_step
        self.max_rows = max_rows  # a batch above it runs eager
        config = self.model.config.get_text_config(decoder=True)
        kinds, _ = get_layer_types_and_kwargs(config)
        self.kinds = set(kinds)
        window = getattr(config, "sliding_window", None)
        # the window the model's own sliding-window masks use (masking_utils reads this field)
        self.window = int(window) if window is not None and kv_layers.SLIDING in kinds else None
        self.generation = -1  # the batch's buffers this step's layers are views of
        self.layers: list[StaticLayer] = []
        self.cache: Any = DynamicCache()
        self.end = torch.zeros(1, dtype=torch.long, device=batch.device)
        self.ids = torch.zeros((0, 1), dtype=torch.long, device=batch.device)
        self.column_index = torch.zeros(0, dtype=torch.long, device=batch.device)

    # ---- outside the step --------------------------------------------------------------

    def bound(self) -> bool:
        """Whether the step's layers are views of the batch's current buffers (rebinds when
        not; False tells a caller holding captured graphs that they point at old buffers)."""
        batch = self.batch
        if self.generation == batch.generation:
            return True
        self.end = torch.zeros(1, dtype=torch.long, device=batch.device)
        self.layers = [
            StaticLayer(layer.key_buffer, layer.value_buffer, self.end) for layer in batch.layers
        ]
        self.cache.layers = self.layers
        self.ids = torch.full((batch.slots, 1), batch.pad_id, dtype=torch.long, device=batch.device)
        self.column_index = torch.arange(batch.columns, device=batch.device)
        self.generation = batch.generation
        return False

    def buckets(self) -> tuple[list[int], list[int]]:
        """The row and column buckets of the batch's current buffers."""
        rows = row_buckets(min(self.batch.slots, self.max_rows))
        return rows, column_buckets(self.batch.columns, self.column_step)

    def largest(self) -> tuple[int, int]:
        """The largest bucket (rows, columns)."""
        rows, cols = self.buckets()
        return rows[-1], cols[-1]

    def prepare(self, tokens: torch.Tensor) -> tuple[int, int] | None:
        """Room for the next column, the tokens and write column into the step's buffers:
        the step's bucket, or None when the batch is above the largest."""
        batch = self.batch
        if batch.end == batch.columns:
            batch.make_room()
        self.bound()
        rows_buckets, cols_buckets = self.buckets()
        rows = bucket(batch.span, rows_buckets)
        cols = bucket(batch.end + 1, cols_buckets)
        if rows is None or cols is None:
            return None
        index = batch.slot_index()
        if index is None:
            self.ids[: batch.rows, 0] = tokens
        else:
            self.ids.index_copy_(0, index, tokens.view(-1, 1))
        self.end.fill_(batch.end)
        return rows, cols

    def finish(self, logits: torch.Tensor) -> torch.Tensor:
        """After the step: the next column, the positions, each row's logits in row order (a
        copy: a captured step's output buffer is the next replay's)."""
        batch = self.batch
        batch.positions[: batch.span] += 1
        batch.end += 1
        index = batch.slot_index()
        return logits[: batch.rows].clone() if index is None else logits.index_select(0, index)

    # ---- the step ------------------------------------------------------------------------

    def forward(self, rows: int, cols: int) -> torch.Tensor:
        """The static step over the first ``rows`` slots and ``cols`` columns: the logits of
        every row of the bucket. Writes the KV and the mask at the column ``end`` holds."""
        for layer in self.layers:
            layer.rows, layer.cols = rows, cols
        mask = self.batch.mask[:rows]
        mask.index_fill_(1, self.end, 1)  # every row sees its own new column: never all masked
        out = self.model(
            input_ids=self.ids[:rows],
            attention_mask=self._masks(mask[:, :cols].bool()[:, None, None, :], cols),
            position_ids=self.batch.positions[:rows].view(-1, 1),
            past_key_values=self.cache,
            use_cache=True,
        )
        logits: torch.Tensor = out.logits[:, -1, :]
        return logits

    def _masks(self, padding: torch.Tensor, cols: int) -> Any:
        """The 4D masks by layer kind (rows x 1 x 1 x cols, True where a row may attend)."""
        if self.window is None:
            return padding
        # the query at column end sees the columns after end - window
        inside = self.column_index[:cols] > self.end - self.window
        windowed = padding & inside[None, None, None, :]
        if kv_layers.FULL not in self.kinds:
            return windowed
        return {kv_layers.FULL: padding, kv_layers.SLIDING: windowed}
