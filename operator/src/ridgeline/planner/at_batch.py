"""``ridgeline plan --batch N``: the planned replica's predicted step at any batch."""

from __future__ import annotations

from dataclasses import dataclass

from ridgeline.api.inference_model import InferenceModelSpec
from ridgeline.api.plan import Plan
from ridgeline.planner import cost
from ridgeline.planner.pools import NodePool
from ridgeline.planner.sizing import size
from ridgeline.shape import ModelShape

GB = 1e9


@dataclass(frozen=True)
class BatchPrediction:
    batch: int
    gpus: int
    step_seconds: float
    tokens_per_second: float
    plateau_tokens_per_second: float
    memory_bytes: int
    usable_bytes: int
    price_per_replica_hour: float | None = None

    @property
    def cost_per_million_tokens(self) -> float | None:
        if self.price_per_replica_hour is None:
            return None
        return cost.cost_per_million_tokens(self.price_per_replica_hour, self.tokens_per_second)

    @property
    def tokens_per_second_per_gpu(self) -> float:
        return self.tokens_per_second / self.gpus

    @property
    def fits(self) -> bool:
        return self.memory_bytes <= self.usable_bytes


def predict_at_batch(
    shape: ModelShape, spec: InferenceModelSpec, plan: Plan, pool: NodePool, batch: int
) -> BatchPrediction:
    """The plan's pool and GPU count, at ``batch`` sequences instead of the target."""
    s = size(shape, spec, pool)
    return BatchPrediction(
        batch=batch,
        gpus=plan.gpus_per_replica,
        step_seconds=s.terms.step_seconds(batch),
        tokens_per_second=s.terms.tokens_per_second(batch),
        plateau_tokens_per_second=s.terms.plateau_tokens_per_second,
        memory_bytes=s.needed_bytes(batch),
        usable_bytes=s.usable(plan.gpus_per_replica),
        price_per_replica_hour=cost.replica_hour_price(pool, plan.gpus_per_replica),
    )


def batch_text(p: BatchPrediction, plan: Plan) -> str:
    memory = (
        f"fits: {p.memory_bytes / GB:.2f} of {p.usable_bytes / GB:.2f} GB at full context"
        if p.fits
        else f"does NOT fit: {p.memory_bytes / GB:.2f} GB needed at full context, "
        f"{p.usable_bytes / GB:.2f} GB usable"
    )
    return (
        f"At batch {p.batch} on {p.gpus} x {plan.gpu_product}: {p.step_seconds * 1000:.1f} ms "
        f"per decode step, {p.tokens_per_second:.0f} tokens/s per replica "
        f"({p.tokens_per_second_per_gpu:.0f} per GPU, "
        f"{p.tokens_per_second / p.plateau_tokens_per_second:.0%} of the "
        f"{p.plateau_tokens_per_second:.0f} plateau); {memory}" + _cost(p) + "."
    )


def _cost(p: BatchPrediction) -> str:
    per_million = p.cost_per_million_tokens
    if per_million is None or p.price_per_replica_hour is None:
        return ""
    return (
        f"; {cost.money(per_million)} per million tokens at "
        f"{cost.money(p.price_per_replica_hour)} per replica-hour"
    )
