"""Servers the harness starts on ports that ``free_port`` picked: waited for on their health
endpoint, and started again on fresh ports when another process took a port between the pick
and the server's bind (``bind: address already in use``), instead of reporting the cluster up
with the server gone."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

# What Go's net package and Python's socket say when the port is taken.
BIND_FAILED = ("address already in use", "Address already in use")
ATTEMPTS = 3


class ServerError(RuntimeError):
    """The server exited for another reason than a taken port, or never became ready."""


def start_on_free_ports(
    name: str,
    port_names: Sequence[str],
    pick_port: Callable[[], int],
    start: Callable[[dict[str, int]], None],
    alive: Callable[[], bool],
    ready: Callable[[dict[str, int]], bool],
    log: Path,
    timeout_s: float = 60,
) -> dict[str, int]:
    """Start ``name`` on fresh ports until it answers ``ready``; the ports it listens on.

    ``start`` launches it on the given ports (its output appended to ``log``); ``alive`` says
    whether the last one launched still runs."""
    for attempt in range(1, ATTEMPTS + 1):
        ports = {port: pick_port() for port in port_names}
        offset = log.stat().st_size if log.exists() else 0
        start(ports)
        outcome = _wait_ready(ports, alive, ready, timeout_s)
        if outcome == "ready":
            return ports
        tail = _read_from(log, offset)
        if outcome == "timeout":
            raise ServerError(f"{name} not ready after {timeout_s:.0f}s:\n{tail[-3000:]}")
        if not any(text in tail for text in BIND_FAILED) or attempt == ATTEMPTS:
            raise ServerError(f"{name} exited at start (attempt {attempt}):\n{tail[-3000:]}")
        print(f"[cluster] {name}: a port was taken, starting again on others", flush=True)
    raise AssertionError("unreachable")


def _wait_ready(
    ports: dict[str, int],
    alive: Callable[[], bool],
    ready: Callable[[dict[str, int]], bool],
    timeout_s: float,
) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready(ports):
            return "ready"
        if not alive():
            return "exited"
        time.sleep(0.2)
    return "timeout"


def _read_from(log: Path, offset: int) -> str:
    try:
        with log.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""
