"""The GPU benchmark's code path, run on a tiny model on the CPU so that it cannot rot
between GPU sessions (the figures themselves come from `make bench` on a GPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_gpu_benchmark_smoke_run() -> None:
    result = subprocess.run(
        [sys.executable, "bench_gpu.py", "--smoke"],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [
        line
        for line in result.stdout.splitlines()
        if line.startswith("| none") or line.startswith("| nf4")
    ]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert int(cells[1]) in (1, 2, 4)  # knee
        assert float(cells[2]) > 0  # plateau tokens/s
        assert int(cells[3]) > 0  # planner B*
