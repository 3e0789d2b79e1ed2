"""Download progress a person can follow: bytes done of total, rate and time left.

On a terminal one line is redrawn in place; without one (a pod's log, a pipe) a line is logged
every ``LOG_EVERY_S`` seconds or each ``LOG_EVERY_FRACTION`` of the total, whichever comes
first, so a 16 GB pull reads as a dozen lines, not thousands.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

log = logging.getLogger("ridgeline.download")

REDRAW_EVERY_S = 0.25
LOG_EVERY_S = 10.0
LOG_EVERY_FRACTION = 0.10
BAR_WIDTH = 24


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def human_seconds(s: float) -> str:
    s = max(0, round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def describe(done: int, total: int, seconds: float) -> str:
    """``1.20 GB / 16.00 GB (7.5%), 85.3 MB/s, 2m55s left``: what both displays show."""
    rate = done / seconds if seconds > 0 else 0.0
    frac = done / total if total else 1.0
    if done >= total:
        left = "done"
    elif rate > 0:
        left = f"{human_seconds((total - done) / rate)} left"
    else:
        left = "time left unknown"
    return f"{human_bytes(done)} / {human_bytes(total)} ({frac:.1%}), {human_bytes(rate)}/s, {left}"


def _log_line(message: str) -> None:
    """To the log where INFO is shown; else to stderr (a process that configured no logging,
    such as a Ray worker, would drop INFO lines)."""
    if log.isEnabledFor(logging.INFO) and log.hasHandlers():
        log.info("%s", message)
    else:
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} {message}\n")
        sys.stderr.flush()


class Progress:
    """Thread-safe byte counter for one download; ``add`` from any worker, ``close`` once."""

    def __init__(
        self,
        label: str,
        total: int,
        mode: str,
        stream: TextIO | None = None,
        emit: Callable[[str], None] = _log_line,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in ("bar", "log", "off"):
            raise ValueError(f"progress mode {mode!r} is not bar, log or off")
        self.label = label
        self.total = total
        self.done = 0
        self.mode = mode
        self._stream = stream or sys.stderr
        self._emit = emit
        self._clock = clock
        self._lock = threading.Lock()
        self._start = clock()
        self._last_draw = float("-inf")
        self._last_log = self._start
        self._last_log_frac = 0.0
        self._closed = False
        if mode == "log" and total:
            self._emit(f"{label}: downloading {human_bytes(total)}")

    @classmethod
    def auto(cls, label: str, total: int, enabled: bool | None = None) -> Progress:
        """A bar when stderr is a terminal, log lines otherwise; nothing when disabled."""
        if enabled is False:
            return cls(label, total, "off")
        return cls(label, total, "bar" if sys.stderr.isatty() else "log")

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = self._clock()
            if self.mode == "bar" and now - self._last_draw >= REDRAW_EVERY_S:
                self._last_draw = now
                self._draw(now)
            elif self.mode == "log" and self.done < self.total:
                frac = self.done / self.total if self.total else 1.0
                if (
                    now - self._last_log >= LOG_EVERY_S
                    or frac - self._last_log_frac >= LOG_EVERY_FRACTION
                ):
                    self._last_log, self._last_log_frac = now, frac
                    self._emit(
                        f"{self.label}: {describe(self.done, self.total, now - self._start)}"
                    )

    def _draw(self, now: float) -> None:
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(min(frac, 1.0) * BAR_WIDTH)
        text = describe(self.done, self.total, now - self._start)
        # \r and clear-to-end: a shorter line must not leave the tail of a longer one.
        self._stream.write(f"\r{self.label} [{bar:<{BAR_WIDTH}}] {text}\x1b[K")
        self._stream.flush()

    def close(self) -> None:
        """The final figures; called once whether or not every byte arrived."""
        with self._lock:
            if self._closed or self.mode == "off" or not self.total:
                self._closed = True
                return
            self._closed = True
            now = self._clock()
            if self.mode == "bar":
                self._draw(now)
                self._stream.write("\n")
                self._stream.flush()
            else:
                self._emit(f"{self.label}: {describe(self.done, self.total, now - self._start)}")
