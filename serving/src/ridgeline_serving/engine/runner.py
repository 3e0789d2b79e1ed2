"""The model runner the scheduler calls (``scheduler.ModelRunner``): prefill groups, the
running batch's joins and leaves, and each decode step's forward.

The decode forward runs one of four ways. ``eager``: transformers' forward over the used rows
and columns (``SlotBatch.decode``), what a CPU replica runs. ``graphs``: the static step
(``static_step.py``) replayed as CUDA graphs (``cuda_graphs.py``), what a CUDA replica runs
where it can. ``compiled``: the static step under ``torch.compile(fullgraph=True)``, which the
tests use on the CPU to catch what would break a capture. ``static``: the static step run as
is (what the graphs capture: a test tells capture from bucketing by it). Prefill always runs
eager, and so does a decode step the static form cannot take (a model
``static_step.not_static`` names, a batch above ``max_graph_rows``, a step whose compile or
capture failed): the reason is logged once, and the replica goes on eager.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import torch

from ridgeline_serving.engine import kv_layers
from ridgeline_serving.engine.prefill import PrefillGroup
from ridgeline_serving.engine.slot_cache import SlotBatch
from ridgeline_serving.engine.static_step import COLUMN_STEP, StaticDecode, not_static

log = logging.getLogger("ridgeline.engine")

DecodeMode = Literal["auto", "eager", "graphs", "static", "compiled"]
# The largest batch captured (vLLM's default too): a graph's rows are all computed, and the
# host time a graph saves is a smaller share of a step that large.
MAX_GRAPH_ROWS = 512


class TransformersRunner:
    """The model side of the scheduling loop: prefill groups, the running batch, decode."""

    def __init__(
        self,
        model: Any,
        pad_id: int,
        *,
        max_batch: int,
        kv_tokens: int,
        max_context: int,
        decode: DecodeMode = "auto",
        column_step: int = COLUMN_STEP,
        max_graph_rows: int = MAX_GRAPH_ROWS,
        compile_backend: Any = "inductor",
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
        if decode == "auto":
            decode = "graphs" if self.device.type == "cuda" else "eager"
        self.mode: DecodeMode = decode
        self.static: StaticDecode | None = None
        self._run: Callable[[int, int], torch.Tensor] | None = None
        self._graphs: Any = None  # cuda_graphs.CapturedSteps
        self._logged: set[str] = set()
        if decode == "eager":
            return
        reason = not_static(model)
        if decode == "graphs" and self.device.type != "cuda":
            reason = f"CUDA graphs need a CUDA device, not {self.device.type}"
        if reason is not None:
            self.mode = "eager"
            self._eager(reason)
            return
        self.static = StaticDecode(self.running, column_step=column_step, max_rows=max_graph_rows)
        if decode == "compiled":
            self._run = torch.compile(
                self.static.forward, fullgraph=True, dynamic=False, backend=compile_backend
            )
        elif decode == "static":
            self._run = self.static.forward
        else:
            from ridgeline_serving.engine.cuda_graphs import CapturedSteps

            self._graphs = CapturedSteps(self.static.forward, self.device)

    def start(self, prompts: list[list[int]]) -> PrefillGroup:
        return PrefillGroup(self.model, prompts, self.pad_id)

    def join(self, group: PrefillGroup) -> None:
        self.running.join(group)

    @torch.inference_mode()
    def decode(self, tokens: list[int]) -> torch.Tensor:
        ids = torch.tensor(tokens, dtype=torch.long).to(self.device, non_blocking=True)
        if self.static is not None:
            logits = self._decode_static(self.static, ids)
            if logits is not None:
                return logits
        return self.running.decode(ids)

    def keep(self, rows: list[int]) -> None:
        self.running.keep(rows)

    def _decode_static(self, static: StaticDecode, ids: torch.Tensor) -> torch.Tensor | None:
        """The static step's logits, or None when this step runs eager."""
        step = static.prepare(ids)
        if step is None:
            self._eager(f"a batch above {static.max_rows} rows", once_only=True)
            return None
        try:
            if self._graphs is not None:
                if self._graphs.generation != static.generation:  # new buffers: new graphs
                    self._graphs.clear()
                    self._graphs.generation = static.generation
                logits = self._graphs.run(*step, largest=static.largest())
            else:
                assert self._run is not None
                logits = self._run(*step)
        except Exception as exc:  # a model the static step cannot take: eager from now on
            log.warning(
                "decode steps run eager from now on: the %s step failed (%s: %s)",
                self.mode,
                type(exc).__name__,
                exc,
            )
            self.static, self._graphs, self._run, self.mode = None, None, None, "eager"
            return None
        return static.finish(logits)

    def _eager(self, reason: str, *, once_only: bool = False) -> None:
        """Log once why decode steps (or some of them) run eager."""
        if reason in self._logged:
            return
        self._logged.add(reason)
        what = "such steps" if once_only else "decode steps"
        log.info("%s run eager: %s", what, reason)
