"""A replica's INFO lines (download progress, the start-up breakdown) are written in a process
that configured no logging, as a Ray worker is; a process that logs already is left as is."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import logging
from ridgeline_serving.logs import configure_replica_logging
{setup}
configure_replica_logging()
configure_replica_logging()  # a second replica in the same worker adds no second handler
logging.getLogger("ridgeline.serving").info("replica ready in 1.0 s")
"""


def _stderr(setup: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(setup=setup)],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stderr


def test_info_lines_reach_stderr_in_a_bare_process() -> None:
    lines = [ln for ln in _stderr("").splitlines() if "replica ready in" in ln]
    assert len(lines) == 1
    assert "INFO ridgeline.serving: replica ready in 1.0 s" in lines[0]


def test_a_configured_process_keeps_its_own_format() -> None:
    out = _stderr("logging.basicConfig(level=logging.WARNING, format='OWN %(message)s')")
    assert out.splitlines() == ["OWN replica ready in 1.0 s"]
