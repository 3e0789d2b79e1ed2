"""On this machine's CPU: the serving engine's decode step against the planner's step model for
a CPU pool that is this machine, at several depths and batches, and the fit of the CPU rows'
host terms (seconds per step, seconds per decoder layer). An eager transformers forward spends
most of a small model's step in Python and operator dispatch, which the roofline does not see;
without these terms the step model predicted steps 1.4-8x shorter than the engine's for the
example model's shape. Writes docs/benchmarks.md (section "Serving, CPU step model"); the fitted constants go
to ridgeline/planner/step_model.py by hand, and the measured points of the 4-layer model to
planner/measurements.py, where tests/unit/test_published_numbers.py holds the step model to
them.

The replica's own setting: float32, torch's default intra-op threads."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np
from bench_gpu import (
    NEW_TOKENS,
    PROMPT_TOKENS,
    Point,
    bench_sizing,
    random_checkpoint,
    sweep,
    sweep_terms,
)
from bench_report import write_section

from ridgeline.api import Quantization
from ridgeline.planner.step_model import Engine, step_model
from ridgeline.planner.throughput import StepTerms
from ridgeline_dev.checkpoints import TINY_LLAMA_CONFIG

# The example model's shape (examples/models/tiny-llama), at several depths.
SHAPE = TINY_LLAMA_CONFIG
DEPTHS = (1, 2, 4, 8)
BATCHES = (1, 2, 4, 8, 16, 32, 64)
# The host terms are fitted where the device terms are small against them.
FIT_BATCHES = (1, 2, 4, 8)
QUANTS = ("none", "int8", "nf4")


def cpu_terms(model_dir: Path, quantization: str, host: bool) -> StepTerms:
    """The planner's step model for this model on a CPU pool of this machine (as `ridgeline
    serve` plans it); ``host=False``: its device terms only."""
    s, shape = bench_sizing(model_dir, "cpu", 0, quantization)
    return sweep_terms(
        s, shape, None if host else dataclasses.replace(s.row, overhead_s=0.0, host_s_per_layer=0.0)
    )


def fit_host(residuals: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares of residual = fixed + per_layer x layers over (layers, seconds) pairs;
    neither term below zero."""
    layers = np.array([float(n) for n, _ in residuals])
    seconds = np.array([s for _, s in residuals])
    a = np.stack([np.ones_like(layers), layers], axis=1)
    (fixed, per_layer), *_ = np.linalg.lstsq(a, seconds, rcond=None)
    if fixed < 0:
        fixed, per_layer = 0.0, float(seconds.sum() / layers.sum())
    return max(float(fixed), 0.0), max(float(per_layer), 0.0)


def measure(quantization: str, tmp: Path, batches: tuple[int, ...]) -> dict[int, dict[int, Point]]:
    curves = {}
    for layers in DEPTHS:
        model_dir = tmp / f"d{layers}"
        if not model_dir.exists():
            random_checkpoint({**SHAPE, "num_hidden_layers": layers}, model_dir)
        curves[layers] = sweep(model_dir, quantization, "float32", 0, list(batches))
    return curves


def section(quantization: str, tmp: Path, curves: dict[int, dict[int, Point]]) -> list[str]:
    device = {n: cpu_terms(tmp / f"d{n}", quantization, host=False) for n in curves}
    now = {n: cpu_terms(tmp / f"d{n}", quantization, host=True) for n in curves}
    residuals = [
        (n, p.decode_step_s - device[n].step_seconds(b))
        for n, curve in curves.items()
        for b, p in curve.items()
        if b in FIT_BATCHES
    ]
    fixed, per_layer = fit_host(residuals)
    row = step_model(Engine.TRANSFORMERS, Quantization(quantization), on_cpu=True)
    lines = [
        f"**{quantization}**: fitted host terms {fixed * 1e3:.2f} ms per step + "
        f"{per_layer * 1e3:.3f} ms per decoder layer (least squares over batches "
        f"{', '.join(map(str, FIT_BATCHES))} at every depth); the step model as it stood for "
        f"this run: {row.overhead_s * 1e3:.2f} ms per step + {row.host_s_per_layer * 1e3:.3f} "
        "ms per layer.",
        "",
        "| layers | batch | decode step, measured (ms) | device terms only (ms) | "
        "step model as it stands (ms) | measured / step model | with the fitted terms (ms) | "
        "measured / fitted |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for n, curve in curves.items():
        for b, p in curve.items():
            dev = device[n].step_seconds(b)
            model = now[n].step_seconds(b)
            fitted = dev + fixed + per_layer * n
            ratios.append(p.decode_step_s / fitted)
            lines.append(
                f"| {n} | {b} | {p.decode_step_s * 1e3:.2f} | {dev * 1e3:.2f} | "
                f"{model * 1e3:.2f} | {p.decode_step_s / model:.2f} | {fitted * 1e3:.2f} | "
                f"{p.decode_step_s / fitted:.2f} |"
            )
    lines += [
        "",
        f"measured / fitted: median {statistics.median(ratios):.2f}, range "
        f"{min(ratios):.2f}-{max(ratios):.2f}.",
        "",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="two batches, print only")
    args = parser.parse_args()
    import torch

    batches = (1, 2) if args.smoke else BATCHES
    shape = json.dumps({k: SHAPE[k] for k in ("hidden_size", "num_attention_heads")})
    lines = [
        f"Random-weight Llama ({shape}, {len(DEPTHS)} depths: "
        f"{', '.join(map(str, DEPTHS))} layers), {PROMPT_TOKENS}-token prompts, {NEW_TOKENS} "
        f"new tokens, greedy, float32 on this machine's CPU with torch's default "
        f"{torch.get_num_threads()} intra-op threads, as a CPU replica runs (torch "
        f"{torch.__version__}). The decode step is the median step while every row of the "
        "batch decodes; the planner's terms are those of a CPU pool that is this machine "
        f"({os.cpu_count()} cores), as `ridgeline serve` plans it.",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for q in QUANTS[:1] if args.smoke else QUANTS:
            curves = measure(q, Path(tmp), batches)
            lines += section(q, Path(tmp), curves)
    text = "\n".join(lines)
    print(text)
    if not args.smoke:
        write_section("Serving, CPU step model", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
