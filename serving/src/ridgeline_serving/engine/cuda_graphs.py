"""The static decode step captured as CUDA graphs, one per (row bucket, column bucket).

An eager transformers forward launches hundreds of kernels a step from Python; on an H100 that
host time (0.7 ms per decoder layer in bf16, docs/benchmarks.md) is most of a small model's
step at any batch. A replayed graph launches them all at once.

Graphs are captured when a bucket is first needed, into one memory pool shared by every graph
(their intermediates are never live at once: replays run one after another). The first
capture is the largest bucket, whatever the first step needs, so the pool is sized by it and
the later, smaller graphs reuse its blocks. At most ``max_graphs`` are kept, the least recently
replayed dropped first. Every graph writes its logits into one output buffer, so the kept
graphs add no per-graph logits. Before a capture the step runs on the capture stream (kernel
selection, lazily made handles) with CUDA's sync debug mode set to raise, so a step that would
synchronise with the host fails there, not inside the capture.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import torch

log = logging.getLogger("ridgeline.engine")

MAX_GRAPHS = 128
WARMUP_RUNS = 2


class CapturedSteps:
    """Captured graphs of ``step(rows, cols)`` (a static step returning logits)."""

    def __init__(
        self,
        step: Callable[[int, int], torch.Tensor],
        device: torch.device,
        *,
        max_graphs: int = MAX_GRAPHS,
    ) -> None:
        self.step = step
        self.device = device
        self.max_graphs = max_graphs
        self.graphs: OrderedDict[tuple[int, int], torch.cuda.CUDAGraph] = OrderedDict()
        self.pool = torch.cuda.graph_pool_handle()
        self.stream = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
        self.out: torch.Tensor | None = None
        self.largest: tuple[int, int] | None = None
        self.generation = -1  # the running batch's buffers the graphs read (StaticDecode's)
        self.captures = 0
        self.capture_seconds = 0.0

    def clear(self) -> None:
        """Drop every graph (the buffers they read were reallocated)."""
        self.graphs.clear()
        self.out = None
        self.pool = torch.cuda.graph_pool_handle()

    def run(self, rows: int, cols: int, largest: tuple[int, int]) -> torch.Tensor:
        """Replay the bucket's graph (captured first if new): the logits of its rows. ``largest``
        is the largest bucket of the current buffers, captured first."""
        key = (rows, cols)
        self.largest = largest
        graph = self.graphs.get(key)
        if graph is None:
            if not self.graphs and key != largest:
                self._capture(*largest)
            graph = self._capture(rows, cols)
        else:
            self.graphs.move_to_end(key)
        graph.replay()
        assert self.out is not None
        return self.out[:rows]

    def _warm_up(self, rows: int, cols: int) -> torch.Tensor:
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("error")  # a host sync raises here, not in the capture
        try:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.stream):
                for _ in range(WARMUP_RUNS):
                    logits = self.step(rows, cols)
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
        finally:
            torch.cuda.set_sync_debug_mode(previous)
        return logits

    def _capture(self, rows: int, cols: int) -> torch.cuda.CUDAGraph:
        started = time.perf_counter()
        reserved = torch.cuda.memory_reserved(self.device)
        logits = self._warm_up(rows, cols)
        if self.out is None:  # one output for every graph: the most rows any bucket has
            most = max(rows, self.largest[0] if self.largest is not None else rows)
            self.out = logits.new_empty((most, logits.shape[-1]))
        out = self.out
        del logits
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            out[:rows].copy_(self.step(rows, cols))
        self.graphs[(rows, cols)] = graph
        while len(self.graphs) > self.max_graphs:
            self.graphs.popitem(last=False)
        seconds = time.perf_counter() - started
        self.captures += 1
        self.capture_seconds += seconds
        log.info(
            "decode graph %d rows x %d columns captured in %.0f ms; GPU memory reserved "
            "%+.1f MiB (%d graphs kept)",
            rows,
            cols,
            seconds * 1e3,
            (torch.cuda.memory_reserved(self.device) - reserved) / 2**20,
            len(self.graphs),
        )
        return graph
