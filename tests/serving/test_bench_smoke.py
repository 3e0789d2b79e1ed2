"""The GPU benchmark's code path, run on a tiny model on the CPU so that it cannot rot
between GPU sessions (the figures themselves come from `make bench` on a GPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def smoke(script: str) -> str:
    """Run a GPU benchmark's ``--smoke`` path; its stdout."""
    result = subprocess.run(
        [sys.executable, script, "--smoke"], cwd=BENCH, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_gpu_benchmark_smoke_run() -> None:
    out = smoke("bench_gpu.py")
    for quant in ("none", "nf4"):
        # "**none**: measured knee 4, plateau 2778 tokens/s (decode); planner B* 100, ..."
        head = next(line for line in out.splitlines() if line.startswith(f"**{quant}**"))
        assert "measured knee" in head
        assert "planner B*" in head
    rows = [line for line in out.splitlines() if line.startswith("| ") and "|---" not in line]
    by_batch = [r for r in rows if r.split("|")[1].strip() in ("1", "2", "4")]
    assert len(by_batch) >= 2 * 3  # batch 1, 2, 4 for each format
    for row in by_batch[:6]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[1]) > 0  # measured decode step, ms
        assert float(cells[2]) > 0  # predicted step, ms
        assert float(cells[4]) > 0  # decode tokens/s
    assert "host ms per layer" in out  # the depth check ran


def test_gpu_engine_comparison_smoke_run() -> None:
    """This engine against transformers' ContinuousBatchingManager, tiny model on the CPU."""
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in smoke("bench_gpu_engines.py").splitlines()
        if line.startswith("| ") and "|---" not in line and "workload" not in line
    ]
    bf16 = [r for r in rows if r[1] == "none"]
    assert {r[0] for r in bf16} == {"batch 4", "batch 8", "4 clients"}
    for row in bf16:
        assert float(row[2]) > 0  # this engine measured
        assert float(row[3]) > 0  # the manager measured
        assert row[4].endswith("x")
    assert any(r[1] == "nf4" for r in rows)
