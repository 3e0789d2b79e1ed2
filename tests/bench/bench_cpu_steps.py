"""On this machine's CPU: the serving engine's decode step against the planner's step model for
a CPU pool that is this machine, at several depths and batches, and the fit of the CPU rows'
two constants: the host seconds per decoder layer and the efficiency (the fraction of the
pool's compute and bandwidth roofs the engine reaches). An eager transformers forward spends
most of a small model's step in Python and operator dispatch, which the roofline does not see
(without the host term the step model predicted steps 1.4-8x shorter than the engine's); and
the roofs of a CPU pool are an estimate from its cores, which the efficiency corrects to what
the engine reaches (half of them was an assumption, and steps at batch 64 came out 1.6x the
prediction). Writes docs/benchmarks.md (section "Serving, CPU step model"); the fitted
constants go to ridgeline/planner/step_model.py by hand, and the measured points of the
4-layer model to planner/measurements.py, where tests/unit/test_published_numbers.py holds the
step model to them.

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
# Up to past the batch `ridgeline serve` plans for the example model on 2 cores (108).
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)
QUANTS = ("none", "int8", "nf4")


def cpu_terms(model_dir: Path, quantization: str) -> StepTerms:
    """The planner's step model for this model on a CPU pool of this machine, as `ridgeline
    serve` plans it."""
    s, shape = bench_sizing(model_dir, "cpu", 0, quantization)
    return sweep_terms(s, shape)


def unit_device_terms(model_dir: Path, quantization: str) -> StepTerms:
    """The row's device terms at efficiency 1 (its weight efficiency in the same proportion):
    every device term of a CPU row is this over the row's efficiency, so a step is
    host x layers + (this step) / efficiency, linear in the two constants."""
    s, shape = bench_sizing(model_dir, "cpu", 0, quantization)
    unit = dataclasses.replace(
        s.row,
        overhead_s=0.0,
        host_s_per_layer=0.0,
        efficiency=1.0,
        weight_efficiency=s.row.weight_efficiency / s.row.efficiency,
    )
    return sweep_terms(s, shape, unit)


def fit_cpu_row(points: list[tuple[int, float, float]]) -> tuple[float, float]:
    """(host seconds per layer, efficiency) from (layers, unit device seconds, measured seconds)
    points: least squares of log(measured / (host x layers + device / efficiency)), so the
    fitted step is the measured one's median and a 2x miss counts the same either way (the
    steps span 1-100 ms; a plan is judged by its ratio). Gauss-Newton from the linear fit of the
    relative error. A negative host part is dropped: then all of the step is the device's."""
    layers = np.array([float(n) for n, _, _ in points])
    device = np.array([d for _, d, _ in points])
    measured = np.array([t for _, _, t in points])
    basis = np.stack([layers, device], axis=1)
    x, *_ = np.linalg.lstsq(basis / measured[:, None], np.ones_like(measured), rcond=None)
    for _ in range(50):
        if x[0] < 0 or x[1] <= 0:
            break
        fitted = basis @ x
        step, *_ = np.linalg.lstsq(basis / fitted[:, None], np.log(measured / fitted), rcond=None)
        x = x + step
        if np.abs(step / x).max() < 1e-9:
            break
    if x[0] < 0 or x[1] <= 0:
        return 0.0, float(np.exp(np.mean(np.log(device / measured))))
    return float(x[0]), 1.0 / float(x[1])


def measure(quantization: str, tmp: Path, batches: tuple[int, ...]) -> dict[int, dict[int, Point]]:
    curves = {}
    for layers in DEPTHS:
        model_dir = tmp / f"d{layers}"
        if not model_dir.exists():
            random_checkpoint({**SHAPE, "num_hidden_layers": layers}, model_dir)
        curves[layers] = sweep(model_dir, quantization, "float32", 0, list(batches))
    return curves


def section(quantization: str, tmp: Path, curves: dict[int, dict[int, Point]]) -> list[str]:
    unit = {n: unit_device_terms(tmp / f"d{n}", quantization) for n in curves}
    now = {n: cpu_terms(tmp / f"d{n}", quantization) for n in curves}
    host, efficiency = fit_cpu_row(
        [
            (n, unit[n].step_seconds(b), p.decode_step_s)
            for n, curve in curves.items()
            for b, p in curve.items()
        ]
    )
    row = step_model(Engine.TRANSFORMERS, Quantization(quantization), on_cpu=True)
    lines = [
        f"**{quantization}**: fitted {host * 1e3:.3f} ms host time per decoder layer and "
        f"efficiency {efficiency:.3f} (least squares of the log ratio over every point below); the step model as it stood for this run: {row.host_s_per_layer * 1e3:.3f} ms "
        f"per layer, efficiency {row.efficiency:.3f}.",
        "",
        "| layers | batch | decode step, measured (ms) | device terms as they stand (ms) | "
        "step model as it stands (ms) | measured / step model | with the fitted constants "
        "(ms) | measured / fitted |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for n, curve in curves.items():
        for b, p in curve.items():
            model = now[n].step_seconds(b)
            dev = model - now[n].overhead_s
            fitted = host * n + unit[n].step_seconds(b) / efficiency
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
