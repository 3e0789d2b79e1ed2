"""A line of the engine's figures beside the plan's, every ``INTERVAL_S`` while it works, where
an operator looks first (`kubectl logs`, `ridgeline serve`'s terminal), as vLLM's stats logger
does. The dashboards carry the same figures; this line needs no Prometheus, and it puts the
measured step beside the planned one, so a plan the engine does not deliver shows in the log:

    engine: 412.3 tokens/s generated, 1024.0 prompt tokens/s; running 12 (plan 58), waiting 0;
    step p50 9.1 ms (plan 72.3 ms at batch 58); KV cache 1536 of 59392 tokens (2.6%)

Fed from the engine's thread (``step``); read from any other (``line``), never blocking the
engine for longer than a counter update."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ridgeline_serving.engine.base import EngineStats, StepStats

INTERVAL_S = 10.0


@dataclass
class _Window:
    prompt_tokens: int = 0
    sampled_tokens: int = 0
    step_seconds: list[float] = field(default_factory=list)


class EngineLog:
    def __init__(
        self,
        planned_batch: int,
        planned_step_s: float | None,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.planned_batch = planned_batch
        self.planned_step_s = planned_step_s
        self.interval_s = interval_s
        self.clock = clock
        self._lock = threading.Lock()
        self._window = _Window()
        self._began = clock()

    def step(self, stats: StepStats) -> None:
        """One engine step (the engine's thread)."""
        with self._lock:
            w = self._window
            w.prompt_tokens += stats.prefill_tokens
            w.sampled_tokens += stats.sampled_tokens
            w.step_seconds.append(stats.seconds)

    def line(self, engine: EngineStats) -> str | None:
        """The line for the window that has just ended; None before it ends, and for a window
        in which the engine ran no step (an idle replica logs nothing)."""
        now = self.clock()
        elapsed = now - self._began
        if elapsed < self.interval_s:
            return None
        with self._lock:
            w, self._window = self._window, _Window()
        self._began = now
        if not w.step_seconds:
            return None
        return format_line(w, elapsed, engine, self.planned_batch, self.planned_step_s)


def format_line(
    w: _Window,
    elapsed_s: float,
    engine: EngineStats,
    planned_batch: int,
    planned_step_s: float | None,
) -> str:
    step_ms = statistics.median(w.step_seconds) * 1000
    planned = (
        f" (plan {planned_step_s * 1000:.1f} ms at batch {planned_batch})"
        if planned_step_s is not None
        else ""
    )
    share = engine.kv_tokens_used / engine.kv_tokens_planned if engine.kv_tokens_planned else 0.0
    return (
        f"engine: {w.sampled_tokens / elapsed_s:.1f} tokens/s generated, "
        f"{w.prompt_tokens / elapsed_s:.1f} prompt tokens/s; running {engine.running} "
        f"(plan {planned_batch}), waiting {engine.waiting}; step p50 {step_ms:.1f} ms{planned}; "
        f"KV cache {engine.kv_tokens_used} of {engine.kv_tokens_planned} tokens "
        f"({share:.1%})"
    )
