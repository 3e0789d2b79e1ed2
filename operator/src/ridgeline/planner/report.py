"""The plan as text for people: the reasons, then the option table."""

from __future__ import annotations

from ridgeline.api import Plan, PlanOption

GB = 1e9


def options_table(options: list[PlanOption]) -> str:
    header = ("", "pool", "gpu product", "gpus", "batch", "mem batch", "tok/s", "note")
    rows = [header]
    for o in options:
        rows.append(
            (
                "*" if o.chosen else ("" if o.feasible else "x"),
                o.pool,
                o.gpu_product,
                str(o.gpus_per_replica),
                "" if o.batch_target is None else str(o.batch_target),
                "" if o.max_batch_by_memory is None else str(o.max_batch_by_memory),
                "" if o.tokens_per_second is None else f"{o.tokens_per_second:.0f}",
                o.note,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
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
