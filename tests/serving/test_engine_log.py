"""The replica's periodic engine line: its figures, the plan beside them, and silence when idle."""

from __future__ import annotations

from ridgeline_serving.engine import EngineStats, StepStats
from ridgeline_serving.engine_log import EngineLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def engine(running: int = 3, waiting: int = 1, used: int = 100) -> EngineStats:
    return EngineStats(running, waiting, used, 1000, steps=0, preemptions=0)


def test_a_line_per_interval_with_the_measured_step_beside_the_plans() -> None:
    clock = Clock()
    log = EngineLog(planned_batch=108, planned_step_s=0.1132, interval_s=10, clock=clock)
    for seconds in (0.01, 0.03, 0.02):
        log.step(StepStats(3, 10, 3, 4, seconds))
    clock.now += 9.9
    assert log.line(engine()) is None  # the window has not ended
    clock.now += 0.1
    assert log.line(engine()) == (
        "engine: 1.2 tokens/s generated, 3.0 prompt tokens/s; running 3 (plan 108), waiting 1; "
        "step p50 20.0 ms (plan 113.2 ms at batch 108); KV cache 100 of 1000 tokens (10.0%)"
    )


def test_an_idle_window_logs_nothing_and_the_next_busy_one_counts_only_its_steps() -> None:
    clock = Clock()
    log = EngineLog(planned_batch=8, planned_step_s=None, interval_s=5, clock=clock)
    clock.now += 5
    assert log.line(engine()) is None
    log.step(StepStats(1, 0, 1, 1, 0.004))
    clock.now += 5
    line = log.line(engine(running=1, waiting=0, used=0))
    assert line is not None
    assert line.startswith("engine: 0.2 tokens/s generated, 0.0 prompt tokens/s;")
    assert "step p50 4.0 ms; KV cache 0 of 1000 tokens (0.0%)" in line  # no plan to set beside
