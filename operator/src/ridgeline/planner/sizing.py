"""The numbers of one model on one pool: memory, the step model, and the batches that bound the
target (B*, the knee, the SLO batch, the memory batch)."""

from __future__ import annotations

from dataclasses import dataclass

from ridgeline.api.inference_model import InferenceModelSpec, WorkloadMode
from ridgeline.api.plan import Bound
from ridgeline.hardware import Accelerator
from ridgeline.planner import cost, memory, roofline
from ridgeline.planner.pools import NodePool
from ridgeline.planner.step_model import Engine, StepModel, kv_context_tokens, step_model
from ridgeline.planner.throughput import StepTerms
from ridgeline.shape import ModelShape

ENGINE = Engine.TRANSFORMERS

# The largest batch the engine takes (the serving image's ServingArgs.max_batch_size bound).
# A small model whose steps are dominated by host time has its knee far beyond it.
ENGINE_MAX_BATCH = 4096


@dataclass(frozen=True)
class Sizing:
    """What does not depend on the GPU count: under a layer split one GPU computes at a time,
    so the step time, B* and the knee are those of one GPU; only memory adds up."""

    pool: NodePool
    acc: Accelerator
    row: StepModel
    context: int
    kv_context: float
    weight_bytes: int
    kv_bytes_per_token: int
    # The prefill chunk's activations and its prompt group's KV (fixed), and the logits (per
    # sequence in the step).
    prefill_bytes: int
    logits_bytes_per_sequence: int
    critical_batch: float
    terms: StepTerms
    knee_batch: int
    slo_batch: float | None

    @property
    def desired_batch(self) -> float:
        """The knee, capped by the SLO: the target when memory allows."""
        if self.slo_batch is None:
            return float(self.knee_batch)
        return min(float(self.knee_batch), self.slo_batch)

    @property
    def kv_bytes_per_sequence(self) -> int:
        """A sequence at the maximum context: the worst case a replica must survive."""
        return self.context * self.kv_bytes_per_token

    def workspace_bytes(self, batch: int) -> int:
        return self.prefill_bytes + batch * self.logits_bytes_per_sequence

    def usable(self, gpus: int) -> int:
        return memory.usable_memory_bytes(self.acc.memory_bytes, gpus)

    def max_batch_by_memory(self, gpus: int) -> int:
        free = self.usable(gpus) - self.weight_bytes - self.prefill_bytes
        return max(0, free // (self.kv_bytes_per_sequence + self.logits_bytes_per_sequence))

    def needed_bytes(self, batch: int) -> int:
        return self.weight_bytes + self.workspace_bytes(batch) + batch * self.kv_bytes_per_sequence


def size(shape: ModelShape, spec: InferenceModelSpec, pool: NodePool) -> Sizing:
    acc = pool.accelerator()
    dtype = acc.compute_dtype
    workload = spec.workload
    context = workload.max_context_tokens
    row = step_model(ENGINE, spec.quantization, acc.is_cpu)
    kv_context = kv_context_tokens(row, workload.prompt_tokens, workload.output_tokens)
    weights = memory.weight_bytes(shape, spec.quantization, dtype)
    kv = memory.kv_bytes_per_token(shape, memory.dtype_bytes(dtype))
    b_star = roofline.ridge_batch(
        acc.dense_flops_per_s,
        memory.bytes_per_weight(spec.quantization, dtype),
        acc.memory_bandwidth_bytes_per_s,
    )
    terms = StepTerms.of(
        row,
        shape.num_layers,
        shape.num_params,
        weights,
        kv_context,
        kv,
        acc.dense_flops_per_s,
        acc.memory_bandwidth_bytes_per_s,
    )
    slo_batch = None
    if workload.mode is WorkloadMode.ONLINE and workload.slo is not None:
        slo_batch = terms.batch_within(workload.slo.time_per_output_token_ms / 1000)
    return Sizing(
        pool=pool,
        acc=acc,
        row=row,
        context=context,
        kv_context=kv_context,
        weight_bytes=weights,
        kv_bytes_per_token=kv,
        prefill_bytes=memory.prefill_bytes(shape, context, dtype)
        + memory.prefill_group_kv_bytes(kv, context),
        logits_bytes_per_sequence=memory.logits_bytes_per_sequence(shape),
        critical_batch=b_star,
        terms=terms,
        knee_batch=min(terms.knee_batch(), ENGINE_MAX_BATCH),
        slo_batch=slo_batch,
    )


@dataclass(frozen=True)
class Candidate:
    sizing: Sizing
    gpus: int
    batch_target: int
    max_batch_by_memory: int
    bound: Bound

    @property
    def step_seconds(self) -> float:
        return self.sizing.terms.step_seconds(self.batch_target)

    @property
    def tokens_per_second(self) -> float:
        return self.batch_target / self.step_seconds

    @property
    def tokens_per_second_per_gpu(self) -> float:
        return self.tokens_per_second / self.gpus

    @property
    def price_per_replica_hour(self) -> float | None:
        return cost.replica_hour_price(self.sizing.pool, self.gpus)

    @property
    def cost_per_million_tokens(self) -> float | None:
        """At the batch target; None where the pool has no price."""
        price = self.price_per_replica_hour
        if price is None:
            return None
        return cost.cost_per_million_tokens(price, self.tokens_per_second)


def candidate(s: Sizing, gpus: int) -> Candidate | None:
    """The batch target on ``gpus`` GPUs and what set it; None when one sequence does not fit."""
    b_mem = s.max_batch_by_memory(gpus)
    if b_mem < 1:
        return None
    desired = s.desired_batch
    target = max(1, roofline.floor_batch(min(desired, b_mem)))
    if b_mem < desired:
        bound = Bound.MEMORY
    elif s.slo_batch is not None and s.slo_batch < s.knee_batch:
        bound = Bound.LATENCY
    elif s.terms.compute_bound_plateau:
        bound = Bound.COMPUTE
    else:
        bound = Bound.BANDWIDTH
    return Candidate(s, gpus, target, b_mem, bound)
