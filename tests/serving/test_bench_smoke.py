"""The GPU benchmarks' code paths, run on a tiny model on the CPU so that they cannot rot
between GPU sessions (the figures themselves come from `make bench` on a GPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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


def test_cpu_step_model_benchmark_smoke_run() -> None:
    """The CPU step-model benchmark (which fits the CPU rows' host term and efficiency): every
    depth at batches 1 and 2, a measured step and the step model's beside it."""
    out = smoke("bench_cpu_steps.py")
    head = next(line for line in out.splitlines() if line.startswith("**none**"))
    assert "ms host time per decoder layer and efficiency" in head
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in out.splitlines()
        if line.startswith("| ") and "|---" not in line and "layers" not in line
    ]
    assert [(r[0], r[1]) for r in rows] == [
        (layers, batch) for layers in ("1", "2", "4", "8") for batch in ("1", "2")
    ]
    for row in rows:
        measured, device, model = float(row[2]), float(row[3]), float(row[4])
        assert measured > 0
        assert device > 0
        assert model > device  # the step model adds the host terms to the device terms


def test_cpu_row_fit_recovers_its_constants_and_never_goes_below_zero() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        from bench_cpu_steps import fit_cpu_row
    finally:
        sys.path.remove(str(BENCH))
    # steps made from known constants: 3 ms of host per layer, a quarter of the roofs
    points = [
        (n, device, 0.003 * n + device / 0.25)
        for n in (1, 2, 4, 8)
        for device in (0.001 * n, 0.004 * n, 0.02 * n)
    ]
    host, efficiency = fit_cpu_row(points)
    assert (host, efficiency) == (pytest.approx(0.003), pytest.approx(0.25))
    # points that would fit a negative host part: all of the step is the device's
    host, efficiency = fit_cpu_row([(1, 0.002, 0.002), (8, 0.010, 0.008)])
    assert host == 0.0
    assert efficiency == pytest.approx(1.25**0.5)  # the geometric mean of device / measured


def test_graphs_benchmark_smoke_run() -> None:
    """`make bench-gpu`'s script on tiny shapes on the CPU (the static step standing in for
    the graphs): the side-by-side table for both models and every format, the closed loop, the
    8B shape at the planner's B*, the targets and the KV passes."""
    out = smoke("bench_gpu_graphs.py")
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in out.splitlines()
        if line.startswith("| 1.1B") or line.startswith("| 8B")
    ]
    assert {(r[0], r[1]) for r in rows} == {
        ("1.1B", "none"),
        ("1.1B", "nf4"),
        ("1.1B", "int8"),
        ("8B", "none"),
    }
    for row in rows:
        assert float(row[3]) > 0  # eager step, ms
        if row[1] == "int8":
            assert row[4] == "eager only"
        else:
            assert float(row[4]) > 0  # the static step, ms
            assert row[5].endswith("x")
    assert "Closed loop, eager: whole-batch step" in out
    assert "Closed loop, static: whole-batch step" in out
    assert "8B shape at the planner's B*" in out
    assert "1.1B bf16 step at batch 64" not in out  # no batch 64 in a smoke run
    assert "closed-loop steps within 1.3x" in out
    assert "| context (tokens) | KV (MB) |" in out
