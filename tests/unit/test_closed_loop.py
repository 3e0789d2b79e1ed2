"""The load stage's closed loop and the reading of Prometheus' range results."""

from __future__ import annotations

import threading

from ridgeline_dev.closed_loop import ClosedLoop, first_at_least, series, steps


def test_the_loop_keeps_each_client_busy_until_stopped() -> None:
    in_flight: list[int] = []
    now = 0
    lock = threading.Lock()
    seen_two = threading.Event()

    def send() -> None:
        nonlocal now
        with lock:
            now += 1
            in_flight.append(now)
            if now >= 2:
                seen_two.set()
        seen_two.wait(30)
        with lock:
            now -= 1

    load = ClosedLoop(send, clients=2, max_s=600)
    load.start()
    assert seen_two.wait(30)  # both clients had a request in flight at once
    load.stop()
    assert load.ok >= 2
    assert load.errors == []
    assert max(in_flight) == 2  # closed loop: never more than one request per client


def test_a_failing_request_is_counted_and_the_load_goes_on() -> None:
    calls = 0
    answered = threading.Event()

    def send() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("503")
        answered.set()
        answered.wait()

    load = ClosedLoop(send, clients=1, max_s=600)
    load.start()
    assert answered.wait(30)
    load.stop()
    assert load.errors == ["RuntimeError('503')"]
    assert load.ok >= 1


def test_the_loop_is_bounded_by_its_deadline() -> None:
    load = ClosedLoop(lambda: None, clients=3, max_s=0)
    load.start()
    load.stop()
    assert load.ok == 0


def test_steps_and_first_reach() -> None:
    result = [{"metric": {}, "values": [[10, "1"], [11, "1"], [12, "2"], [13, "2"], [14, "1"]]}]
    values = series(result)
    assert steps(values) == [(10, 1), (12, 2), (14, 1)]
    assert first_at_least(values, 2, after=0) == 12
    assert first_at_least(values, 2, after=13.5) is None
    assert series([]) == []
