"""A bounded closed-loop load: N clients, each sending its next request when the last one
ends, until told to stop or a deadline passes (it never outlives its bound), and what
Prometheus recorded over a run, read back as step changes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ClosedLoop:
    """``send()`` is one request (raising on failure); ``clients`` threads call it in a loop."""

    send: Callable[[], None]
    clients: int
    max_s: float
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    started: float = 0.0
    stopped: float = 0.0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, daemon=True, name=f"load-{i}")
            for i in range(self.clients)
        ]

    def start(self) -> None:
        self.started = time.time()
        self._deadline = time.monotonic() + self.max_s
        for thread in self._threads:
            thread.start()

    def _client(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                self.send()
            except Exception as exc:  # counted and reported, the load goes on
                with self._lock:
                    self.errors.append(repr(exc)[:200])
            else:
                with self._lock:
                    self.ok += 1

    def stop(self, join_s: float = 600) -> None:
        """Stops sending; returns once every client's last request has ended."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=join_s)
        self.stopped = time.time()


def steps(values: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A sampled series as its changes: (time, value) each time the value differs from the
    previous sample's (the first sample included)."""
    out: list[tuple[float, float]] = []
    for t, v in values:
        if not out or out[-1][1] != v:
            out.append((t, v))
    return out


def series(result: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """The one series of a range query's result as (time, value); empty for no series."""
    assert len(result) <= 1, result
    return [(float(t), float(v)) for t, v in result[0]["values"]] if result else []


def first_at_least(values: list[tuple[float, float]], floor: float, after: float) -> float | None:
    """The first time at or after ``after`` when the series reached ``floor``."""
    return next((t for t, v in values if t >= after and v >= floor), None)
