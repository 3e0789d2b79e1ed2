"""The replica's health logic on a fake clock: a busy engine that steps is healthy, one that
stops stepping with work in it is not, one failed batch is not enough, a failing probe is."""

from __future__ import annotations

from ridgeline_serving.engine import EventCallback, GenerationRequest, SequenceEvent, StepStats
from ridgeline_serving.health import STALL_FLOOR_S, EngineHealth, stall_bound

WORK = StepStats(running=8, prefill_tokens=0, decode_tokens=8, sampled_tokens=8, seconds=0.02)
# what the scheduler reports for a step whose every prefill failed: it ends, having done nothing
FAILED_PREFILL = StepStats(
    running=0, prefill_tokens=0, decode_tokens=0, sampled_tokens=0, seconds=0.01
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Probes:
    def __init__(self) -> None:
        self.sent: list[tuple[GenerationRequest, EventCallback]] = []

    def __call__(self, request: GenerationRequest, on_event: EventCallback) -> int:
        self.sent.append((request, on_event))
        return len(self.sent)


def _health(stall_s: float = 30) -> tuple[EngineHealth, Clock, Probes]:
    clock, probes = Clock(), Probes()
    return EngineHealth(stall_s, probes, clock), clock, probes


def test_the_stall_bound_follows_the_planned_step_above_a_floor() -> None:
    assert stall_bound(None) == STALL_FLOOR_S
    assert stall_bound(0.02) == STALL_FLOOR_S  # 200 steps of 20 ms: 4 s, below the floor
    assert stall_bound(0.5) == 100.0


def test_an_idle_engine_is_healthy_however_long_it_waits() -> None:
    health, clock, probes = _health()
    clock.now += 10_000
    assert health.check() is None
    assert probes.sent == []


def test_a_busy_engine_that_steps_is_healthy() -> None:
    health, clock, _ = _health()
    health.submitted(8)
    for _ in range(100):
        clock.now += 20
        health.stepped(WORK)
        assert health.check() is None


def test_work_with_no_step_past_the_bound_is_a_stall() -> None:
    """A step that never returns, or an engine thread that died: the sequences never end."""
    health, clock, _ = _health(stall_s=30)
    clock.now += 500  # idle time before the work arrives does not count
    health.submitted(2)
    clock.now += 29
    assert health.check() is None
    clock.now += 2
    reason = health.check()
    assert reason is not None
    assert "stalled" in reason
    assert "2 sequences" in reason
    health.stepped(WORK)  # it recovered
    assert health.check() is None


def test_one_failed_batch_is_probed_and_a_good_probe_clears_it() -> None:
    health, _, probes = _health()
    health.submitted(3)
    for _ in range(3):
        health.finished("ValueError: one row's parameters")
    assert health.check() is None  # not yet a verdict: a probe is sent
    assert len(probes.sent) == 1
    assert health.check() is None  # one probe at a time
    assert len(probes.sent) == 1
    request, on_event = probes.sent[0]
    assert request.max_tokens == 1
    on_event(SequenceEvent("x", "length", 1))
    health.stepped(WORK)
    assert health.check() is None
    assert len(probes.sent) == 1


def test_a_sticky_device_error_fails_the_probe_and_the_check() -> None:
    health, _, probes = _health()
    health.submitted()
    health.finished("RuntimeError: CUDA error: an illegal memory access was encountered")
    assert health.check() is None
    _, on_event = probes.sent[0]
    on_event(
        SequenceEvent("", "stop", 0, error="RuntimeError: CUDA error: an illegal memory access")
    )
    reason = health.check()
    assert reason is not None
    assert "keep failing" in reason
    assert "illegal memory access" in reason
    assert health.check() == reason  # until a step succeeds again


def test_a_step_that_did_no_work_is_no_sign_of_health() -> None:
    """A failed prefill fails its group inside the step, and the step still ends: that must not
    clear the failure, or a broken device that fails every prefill would look healthy."""
    health, _, probes = _health()
    health.submitted()
    health.finished("RuntimeError: CUDA error")
    health.stepped(FAILED_PREFILL)
    assert health.check() is None
    _, on_event = probes.sent[0]
    on_event(SequenceEvent("", "stop", 0, error="RuntimeError: CUDA error"))
    health.stepped(FAILED_PREFILL)
    reason = health.check()
    assert reason is not None
    assert "keep failing" in reason


def test_a_probe_the_engine_never_answers_is_a_stall() -> None:
    health, clock, probes = _health(stall_s=30)
    health.submitted()
    health.finished("RuntimeError: step failed")
    assert health.check() is None
    assert len(probes.sent) == 1
    clock.now += 31
    reason = health.check()
    assert reason is not None
    assert "stalled" in reason


def test_an_engine_that_refuses_the_probe_is_broken() -> None:
    def closed(request: GenerationRequest, on_event: EventCallback) -> int:
        raise RuntimeError("engine closed")

    health = EngineHealth(30, closed, Clock())
    health.submitted()
    health.finished("RuntimeError: step failed")
    assert health.check() is None
    reason = health.check()
    assert reason is not None
    assert "engine closed" in reason
