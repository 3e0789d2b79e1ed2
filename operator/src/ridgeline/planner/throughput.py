"""Step time and tokens/s of one replica as the batch grows; the knee and the SLO batch.

t(B) = overhead + max(compute_per_sequence x B, weights + kv_per_sequence x B). The overhead is
a fixed part plus the engine's host time per layer x layers; every other term is already
divided by the engine's efficiency (``step_model``). tokens/s = B / t(B) rises with B toward a
plateau, 1 / max(compute_per_sequence, kv_per_sequence): past the knee more sequences add KV
reads (or math) and little speed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ridgeline.planner import roofline
from ridgeline.planner.step_model import StepModel

# The knee: the smallest batch reaching this fraction of the plateau.
KNEE_FRACTION = 0.90
_MAX_BATCH = 1 << 30


@dataclass(frozen=True)
class StepTerms:
    """The seconds of one step, split into what does and does not grow with the batch."""

    overhead_s: float
    weights_s: float
    compute_s_per_sequence: float
    kv_s_per_sequence: float

    @classmethod
    def of(
        cls,
        row: StepModel,
        num_layers: int,
        num_params: int,
        weight_bytes: int,
        context_tokens: float,
        kv_bytes_per_token: int,
        flops_per_s: float,
        bandwidth_bytes_per_s: float,
    ) -> StepTerms:
        kv = roofline.kv_seconds(1, context_tokens, kv_bytes_per_token, bandwidth_bytes_per_s)
        return cls(
            overhead_s=row.overhead_s + row.host_s_per_layer * num_layers,
            weights_s=roofline.weight_seconds(weight_bytes, bandwidth_bytes_per_s)
            / row.weight_efficiency,
            compute_s_per_sequence=roofline.compute_seconds(num_params, 1, flops_per_s)
            / row.efficiency,
            kv_s_per_sequence=row.kv_passes * kv / row.efficiency,
        )

    def step_seconds(self, batch: float) -> float:
        return self.overhead_s + max(
            self.compute_s_per_sequence * batch,
            self.weights_s + self.kv_s_per_sequence * batch,
        )

    def tokens_per_second(self, batch: float) -> float:
        return batch / self.step_seconds(batch)

    @property
    def plateau_tokens_per_second(self) -> float:
        """What an unbounded batch would approach: the compute or the KV-bandwidth roof."""
        return 1.0 / max(self.compute_s_per_sequence, self.kv_s_per_sequence)

    @property
    def compute_bound_plateau(self) -> bool:
        return self.compute_s_per_sequence >= self.kv_s_per_sequence

    def knee_batch(self, fraction: float = KNEE_FRACTION) -> int:
        """Smallest whole batch whose tokens/s reaches ``fraction`` of the plateau (tokens/s
        only grows with the batch, so a bisection finds it)."""
        goal = fraction * self.plateau_tokens_per_second
        lo, hi = 1, _MAX_BATCH
        if self.tokens_per_second(lo) >= goal:
            return lo
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.tokens_per_second(mid) >= goal:
                hi = mid
            else:
                lo = mid
        return hi

    def batch_within(self, step_seconds: float) -> float:
        """Largest (real) B whose step fits ``step_seconds``; negative when even an empty batch
        does not (the weights alone take longer to stream)."""
        budget = step_seconds - self.overhead_s
        by_compute = budget / self.compute_s_per_sequence
        if self.kv_s_per_sequence == 0:
            by_memory = float("inf") if budget >= self.weights_s else -1.0
        else:
            by_memory = (budget - self.weights_s) / self.kv_s_per_sequence
        return min(by_compute, by_memory)
