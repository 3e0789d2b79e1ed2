"""Whether a replica's engine can still step, for Serve's ``check_health`` and ``/health``.

The engine loop catches every step error (a failed forward fails its sequences, not the
replica), so a broken device would otherwise look healthy forever: after a sticky CUDA fault
every step fails while the actor stays up. Two signs tell a broken engine from a busy one:

- **stalled**: sequences are in the engine and no step has ended for ``stall_s`` (a step that
  never returns, or an engine thread that died: its sequences never hear back);
- **failing**: a step failed and none has succeeded since. That alone may be one bad batch, so
  the check then submits a one-token probe; the engine is broken if the probe fails too.

A healthy idle engine is never probed, so the probe costs nothing in normal operation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ridgeline_serving.engine.base import GenerationRequest, SequenceEvent, StepStats

# A step is a decode of the batch or one prefill chunk; a stalled engine is one that has not
# ended a step in this many planned decode steps (prefill chunks and slow CPUs fit well
# within it), and never less than the floor.
STALL_STEPS = 200
STALL_FLOOR_S = 60.0
PROBE = GenerationRequest([0], 1, temperature=0.0)

Submit = Callable[[GenerationRequest, Callable[[SequenceEvent], None]], int]


def stall_bound(planned_step_s: float | None) -> float:
    """Seconds without an ended step, with work in the engine, that mark it stalled."""
    return max(STALL_FLOOR_S, STALL_STEPS * (planned_step_s or 0.0))


class EngineHealth:
    """Fed by the replica (sequences in and out, steps ended); ``check`` gives a reason the
    engine is broken, or None. Thread-safe: steps end on the engine's thread."""

    def __init__(
        self, stall_s: float, submit: Submit, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stall_s = stall_s
        self._submit = submit
        self._clock = clock
        self._lock = threading.Lock()
        self._open = 0  # sequences in the engine, probes included
        self._since = clock()  # the last step's end, or when the engine got work while idle
        self._failure: str | None = None  # a step error with no successful step since
        self._probing = False
        self._probe_error: str | None = None

    def submitted(self, sequences: int = 1) -> None:
        with self._lock:
            if self._open == 0:
                self._since = self._clock()
            self._open += sequences

    def finished(self, error: str | None = None) -> None:
        """One sequence has left the engine; ``error`` if a failed step ended it."""
        with self._lock:
            self._open -= 1
            if error is not None:
                self._failure = error

    def stepped(self, stats: StepStats) -> None:
        """A step ended (the engine's on_step). Only one that ran a prompt or sampled a token
        shows the engine can step: a step whose every prefill failed ends too, with neither."""
        if not (stats.prefill_tokens or stats.sampled_tokens):
            return
        with self._lock:
            self._since = self._clock()
            self._failure = None
            self._probe_error = None

    def check(self) -> str | None:
        """Why the engine cannot step, or None; may start a probe (see the module)."""
        with self._lock:
            if self._probe_error is not None:
                return f"engine steps keep failing: {self._probe_error}"
            idle = self._clock() - self._since
            if self._open and idle > self.stall_s:
                return (
                    f"engine stalled: no step ended for {idle:.0f} s with {self._open} "
                    f"sequences in it (bound {self.stall_s:.0f} s)"
                )
            if self._failure is None or self._probing:
                return None
            self._probing = True
        self.submitted()
        try:
            self._submit(PROBE, self._probe_event)
        except Exception as exc:  # an engine that cannot take a sequence is broken too
            self.finished()
            self._probe_done(f"{type(exc).__name__}: {exc}")
        return None

    def _probe_event(self, event: SequenceEvent) -> None:
        if event.finish is None:
            return
        self.finished(event.error)
        self._probe_done(event.error)

    def _probe_done(self, error: str | None) -> None:
        with self._lock:
            self._probing = False
            if error is not None:
                self._probe_error = error
