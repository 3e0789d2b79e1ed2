"""``ridgeline plan --plot``: tokens/s against the batch, the roofs, the knee, B*, the plan, and
measured points where the table in ``measurements`` has a sweep for this GPU and model size.
Rendered in memory: the caller writes the image (the planner does no I/O)."""

from __future__ import annotations

import io

from ridgeline.api import InferenceModelSpec, Plan
from ridgeline.planner import memory, roofline
from ridgeline.planner.measurements import measured_for
from ridgeline.planner.pools import NodePool
from ridgeline.planner.sizing import size
from ridgeline.planner.step_model import Engine
from ridgeline.planner.throughput import StepTerms
from ridgeline.shape import ModelShape


def plot_plan(
    image_format: str,
    name: str,
    shape: ModelShape,
    spec: InferenceModelSpec,
    plan: Plan,
    pool: NodePool,
    batch: int | None = None,
) -> bytes:
    """The plot as an image in ``image_format`` (``png``, ``svg``, ``pdf``...); matplotlib's
    ValueError for a format it cannot write."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = size(shape, spec, pool)
    acc = s.acc
    flops = acc.dense_flops_per_s
    bw = acc.memory_bandwidth_bytes_per_s
    top = max(4 * plan.critical_batch, 2 * s.knee_batch, 2 * (batch or 1), 8)
    batches = [1 + i * (top - 1) / 400 for i in range(401)]

    def roof(b: float, ctx: float) -> float:
        t = roofline.roofline_step_seconds(
            shape.num_params, s.weight_bytes, b, ctx, s.kv_bytes_per_token, flops, bw
        )
        return b / t

    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(batches, [roof(b, 0) for b in batches], label="roofline (weights only)", lw=2)
    ax.plot(
        batches,
        [roof(b, s.kv_context) for b in batches],
        label=f"roofline + KV at {s.kv_context:.0f} tokens",
        ls="--",
    )
    ax.plot(
        batches,
        [s.terms.tokens_per_second(b) for b in batches],
        label=f"predicted ({s.row.engine.value}, {s.row.efficiency:.0%} efficiency)",
        ls=":",
        lw=2,
    )
    for sweep in measured_for(shape.num_params, acc.name, Engine(plan.engine), spec.quantization):
        at_sweep = StepTerms.of(
            s.row,
            shape.num_layers,
            shape.num_params,
            s.weight_bytes,
            sweep.context_tokens,
            s.kv_bytes_per_token,
            flops,
            bw,
        )
        xs = [b for b, _ in sweep.points]
        ax.plot(
            xs,
            [b / (ms / 1000) for b, ms in sweep.points],
            "s",
            color="tab:red",
            label=f"measured: {sweep.model} ({sweep.prompt_tokens}+{sweep.output_tokens})",
        )
        ax.plot(
            xs,
            [at_sweep.tokens_per_second(b) for b in xs],
            "-",
            color="tab:red",
            lw=0.8,
            label="predicted at the measured lengths",
        )
    for x, text in ((plan.critical_batch, "B*"), (s.knee_batch, "knee")):
        ax.axvline(x, color="grey", lw=1)
        ax.annotate(
            f"{text} = {x}", (x, ax.get_ylim()[1] * 0.05), rotation=90, va="bottom", ha="right"
        )
    if plan.max_batch_by_memory < top:
        ax.axvspan(
            plan.max_batch_by_memory, top, color="red", alpha=0.08, label="KV cache does not fit"
        )
    point = f"plan: batch {plan.batch_target}, {plan.predicted.tokens_per_second:.0f} tok/s"
    ax.plot(
        [plan.batch_target],
        [plan.predicted.tokens_per_second],
        "o",
        ms=9,
        color="black",
        label=point,
    )
    if batch:
        ax.plot(
            [batch],
            [s.terms.tokens_per_second(batch)],
            "D",
            ms=7,
            color="tab:purple",
            label=f"batch {batch}: {s.terms.tokens_per_second(batch):.0f} tok/s",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch (sequences decoded together)")
    ax.set_ylabel("output tokens/s per replica")
    ax.set_title(
        f"{name}: {shape.architecture} {spec.quantization.value} on {plan.gpus_per_replica} x "
        f"{acc.name} ({memory.bytes_per_weight(spec.quantization, acc.compute_dtype):g} B/weight)"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    image = io.BytesIO()
    try:
        fig.savefig(image, dpi=110, format=image_format)
    finally:
        plt.close(fig)
    return image.getvalue()
