"""``ridgeline plan --plot``: the GPU's roofline, the ridge point and the operating point."""

from __future__ import annotations

from pathlib import Path

from ridgeline.api import InferenceModelSpec, Plan
from ridgeline.planner import memory, roofline
from ridgeline.planner.pools import NodePool
from ridgeline.shape import ModelShape


def plot_plan(
    path: Path,
    name: str,
    shape: ModelShape,
    spec: InferenceModelSpec,
    plan: Plan,
    pool: NodePool,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = pool.accelerator()
    context = spec.workload.max_context_tokens
    flops = acc.dense_flops_per_s
    bw = acc.memory_bandwidth_bytes_per_s
    top = max(4 * plan.critical_batch, 2 * plan.batch_target, 8)
    batches = [1 + i * (top - 1) / 400 for i in range(401)]

    def tps(batch: float, ctx: int, eff: float) -> float:
        t = roofline.decode_step_seconds(
            shape.num_params,
            plan.weight_bytes,
            batch,
            ctx,
            plan.kv_bytes_per_token,
            flops,
            bw,
            efficiency=eff,
        )
        return batch / t

    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(batches, [tps(b, 0, 1.0) for b in batches], label="roofline (weights only)", lw=2)
    ax.plot(
        batches,
        [tps(b, context, 1.0) for b in batches],
        label=f"roofline + KV at {context} tokens",
        ls="--",
    )
    ax.plot(
        batches,
        [tps(b, context, roofline.DECODE_EFFICIENCY) for b in batches],
        label=f"predicted ({roofline.DECODE_EFFICIENCY:.0%} efficiency)",
        ls=":",
    )
    ax.axvline(plan.critical_batch, color="grey", lw=1)
    ax.annotate(
        f"B* = {plan.critical_batch}",
        (plan.critical_batch, ax.get_ylim()[1] * 0.05),
        rotation=90,
        va="bottom",
        ha="right",
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
    fig.savefig(path, dpi=110)
    plt.close(fig)
