"""The plan as text for people: the reasons, then the option table."""

from __future__ import annotations

from ridgeline.api import Plan, PlanOption
from ridgeline.planner.cost import money

GB = 1e9


def options_table(options: list[PlanOption]) -> str:
    """One row per option; a cost column (per million tokens) where any pool has a price."""
    costs = any(o.cost_per_million_tokens is not None for o in options)
    header = ("", "pool", "gpu product", "gpus", "batch", "mem batch", "tok/s")
    rows: list[tuple[str, ...]] = [(*header, *(("cost/Mtok",) if costs else ()), "note")]
    for o in options:
        row: tuple[str, ...] = (
            "*" if o.chosen else ("" if o.feasible else "x"),
            o.pool,
            o.gpu_product,
            str(o.gpus_per_replica),
            "" if o.batch_target is None else str(o.batch_target),
            "" if o.max_batch_by_memory is None else str(o.max_batch_by_memory),
            "" if o.tokens_per_second is None else f"{o.tokens_per_second:.0f}",
        )
        if costs:
            per_million = o.cost_per_million_tokens
            row = (*row, "" if per_million is None else money(per_million))
        rows.append((*row, o.note))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    ).rstrip()


def plan_text(name: str, plan: Plan) -> str:
    p = plan.predicted
    summary = (
        f"{name}: {plan.gpus_per_replica} x {plan.gpu_product} per replica on pool {plan.pool}, "
        f"batch {plan.batch_target} ({plan.bound.value}-bound), "
        f"{p.tokens_per_second:.0f} tokens/s, {p.time_per_output_token_ms:.1f} ms per token"
    )
    if p.cost_per_million_tokens is not None:
        summary += f", {money(p.cost_per_million_tokens)} per million tokens"
    kv = plan.memory_per_replica_bytes - plan.weight_bytes - plan.workspace_bytes
    memory = (
        f"Memory per replica: {plan.memory_per_replica_bytes / GB:.2f} GB of "
        f"{plan.usable_memory_per_replica_bytes / GB:.2f} GB usable "
        f"(weights {plan.weight_bytes / GB:.2f}, KV cache {kv / GB:.2f}, "
        f"workspace {plan.workspace_bytes / GB:.2f})."
    )
    reasons = "\n".join(f"  - {r}" for r in plan.reasons)
    return f"{summary}\n\nWhy:\n{reasons}\n  - {memory}\n\nOptions considered:\n" + options_table(
        plan.options
    )
