"""Size a model for each allowed node pool and choose one.

Rule (design section 3): the batch target is the knee of the replica's throughput curve (the
smallest batch reaching 90% of the tokens/s an unbounded batch would approach), capped by the
per-token SLO and by memory. A replica gets the fewest GPUs that hold the weights and that
target at the maximum context; a larger GPU count wins only if it raises tokens/s per GPU.
GPU counts are powers of two that divide the attention and KV heads, at most one node's GPUs.
Options, and pools, rank by tokens/s per GPU, then fewest GPUs, then the pool name. Where every
allowed pool has a price, pools rank first by cost per million tokens (planner/cost.py); within a
pool the GPU count is the same either way, since a replica's price grows with its GPUs.

The serving engine is transformers with ``device_map``: a layer split, where memory adds up
over the GPUs but only one computes at a time. So N GPUs have the step time of one GPU: they add
sequences (memory), not speed, and more throughput comes from replicas.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ridgeline.api.inference_model import InferenceModelSpec, Quantization
from ridgeline.api.plan import Bound, Plan, PlanOption, Prediction
from ridgeline.planner import cost, memory, roofline
from ridgeline.planner.pools import NodePool
from ridgeline.planner.reasons import count_params, plan_reasons
from ridgeline.planner.sizing import Candidate, candidate, size
from ridgeline.shape import ModelShape

GB = 1e9
GIB = 2**30


class InfeasiblePlanError(ValueError):
    """No allowed pool can serve the model; ``options`` says why for each."""

    def __init__(self, message: str, options: list[PlanOption]) -> None:
        super().__init__(message)
        self.options = options


def gpu_counts(pool: NodePool, shape: ModelShape) -> list[int]:
    """Powers of two up to the node's GPUs that divide the attention and the KV heads."""
    if pool.is_cpu:
        return [1]
    counts = []
    n = 1
    while n <= pool.gpus_per_node:
        if shape.num_attention_heads % n == 0 and shape.num_kv_heads % n == 0:
            counts.append(n)
        n *= 2
    return counts


def _allowed(pool: NodePool, accelerators: list[str] | None) -> bool:
    if accelerators is None:
        return not pool.is_cpu
    wanted = {a.strip().lower() for a in accelerators}
    product = pool.gpu_product.strip().lower().removesuffix("-shared")
    return product in wanted


Rank = Callable[[Candidate], tuple[float | int | str, ...]]


def _rank(c: Candidate) -> tuple[float, int, str]:
    """Most tokens/s per GPU, then fewest GPUs, then the pool name."""
    return (-c.tokens_per_second_per_gpu, c.gpus, c.sizing.pool.name)


def _cost_rank(c: Candidate) -> tuple[float, float, int, str]:
    """The lowest cost per million tokens, then as ``_rank``; only where every pool is priced."""
    price = c.cost_per_million_tokens
    assert price is not None
    return (price, *_rank(c))


def priced(pools: list[NodePool]) -> bool:
    """Whether the plan chooses by cost: every allowed pool has a price."""
    return bool(pools) and all(p.price_per_node_hour is not None for p in pools)


def _evaluate_pool(
    shape: ModelShape, spec: InferenceModelSpec, pool: NodePool
) -> tuple[Candidate | None, list[PlanOption]]:
    s = size(shape, spec, pool)
    counts = gpu_counts(pool, shape)

    def option(gpus: int, feasible: bool, note: str, **numbers: float | int | None) -> PlanOption:
        return PlanOption(
            pool=pool.name,
            gpu_product=pool.gpu_product,
            gpus_per_replica=gpus,
            feasible=feasible,
            note=note,
            **numbers,
        )

    if not counts:
        heads = f"{shape.num_attention_heads} heads / {shape.num_kv_heads} KV heads"
        return None, [
            option(0, False, f"pool has {pool.gpus_per_node} GPUs per node; none divides {heads}")
        ]
    holds_weights = s.max_batch_by_memory(counts[-1]) >= 1
    if s.slo_batch is not None and s.slo_batch < 1 and holds_weights:
        one = s.terms.step_seconds(1) * 1000
        assert spec.workload.slo is not None
        note = (
            f"one sequence takes {one:.1f} ms per token on {s.acc.name} "
            f"({spec.quantization.value}, {s.row.engine.value}), over the "
            f"{spec.workload.slo.time_per_output_token_ms:g} ms SLO (more GPUs do not help: "
            "a layer split computes on one GPU at a time)"
        )
        return None, [option(n, False, note) for n in counts]

    viable: list[Candidate] = []
    options: dict[int, PlanOption] = {}
    for gpus in counts:
        cand = candidate(s, gpus)
        if cand is None:
            short = s.needed_bytes(1) - s.usable(gpus)
            options[gpus] = option(
                gpus,
                False,
                f"weights {s.weight_bytes / GB:.2f} GB + one {s.context}-token sequence "
                f"{s.kv_bytes_per_sequence / GIB:.2f} GiB + workspace exceed "
                f"{gpus} x {memory.USABLE_MEMORY_FRACTION:.0%} of "
                f"{s.acc.memory_bytes / GIB:.1f} GiB by {short / GB:.2f} GB",
                max_batch_by_memory=0,
            )
            continue
        viable.append(cand)
    if not viable:
        return None, list(options.values())
    chosen = min(viable, key=_rank)
    for c in viable:
        options[c.gpus] = option(
            c.gpus,
            True,
            _note(c, chosen),
            batch_target=c.batch_target,
            max_batch_by_memory=c.max_batch_by_memory,
            tokens_per_second=round(c.tokens_per_second, 1),
            tokens_per_second_per_gpu=round(c.tokens_per_second_per_gpu, 1),
            cost_per_million_tokens=_rounded(c.cost_per_million_tokens),
        )
    return chosen, [options[n] for n in counts]


def _rounded(value: float | None) -> float | None:
    return None if value is None else cost.significant(value)


def _note(c: Candidate, chosen: Candidate) -> str:
    if c is chosen:
        if c.bound is Bound.MEMORY:
            return "most tokens/s per GPU; memory still caps the batch below the target"
        return "fewest GPUs that hold the batch target"
    per_gpu = (
        f"{c.tokens_per_second_per_gpu:.0f} tokens/s per GPU vs "
        f"{chosen.tokens_per_second_per_gpu:.0f}"
    )
    if c.gpus < chosen.gpus:
        return f"holds only {c.max_batch_by_memory} sequences: {per_gpu}"
    gain = c.tokens_per_second / chosen.tokens_per_second - 1
    return (
        f"batch {c.batch_target}, {gain:+.0%} tokens/s for {c.gpus // chosen.gpus}x the GPUs: "
        f"{per_gpu}; add replicas instead"
    )


def plan_model(shape: ModelShape, spec: InferenceModelSpec, pools: list[NodePool]) -> Plan:
    context = spec.workload.max_context_tokens
    if shape.max_position_embeddings and context > shape.max_position_embeddings:
        raise InfeasiblePlanError(
            f"workload.maxContextTokens {context} exceeds the model's max_position_embeddings "
            f"{shape.max_position_embeddings}",
            [],
        )
    allowed = [p for p in pools if _allowed(p, spec.accelerators)]
    if not allowed:
        names = ", ".join(f"{p.name} ({p.gpu_product})" for p in pools) or "none"
        wanted = spec.accelerators or ["any GPU"]
        raise InfeasiblePlanError(f"no node pool matches accelerators {wanted}; pools: {names}", [])
    candidates: list[Candidate] = []
    options: list[PlanOption] = []
    for pool in allowed:
        cand, pool_options = _evaluate_pool(shape, spec, pool)
        options.extend(pool_options)
        if cand is not None:
            candidates.append(cand)
    if not candidates:
        raise InfeasiblePlanError(_infeasible_message(shape, spec, options), options)
    rank: Rank = _cost_rank if priced(allowed) else _rank
    best = min(candidates, key=rank)
    options = [
        o.model_copy(update={"chosen": True})
        if o.pool == best.sizing.pool.name and o.gpus_per_replica == best.gpus
        else o
        for o in options
    ]
    others = sorted((c for c in candidates if c is not best), key=rank)
    alternatives = [
        c
        for g in gpu_counts(best.sizing.pool, shape)
        if g != best.gpus and (c := candidate(best.sizing, g)) is not None
    ]
    unpriced = [p.name for p in allowed if p.price_per_node_hour is None]
    return _plan(shape, spec, best, options, others, alternatives, unpriced)


def _infeasible_message(
    shape: ModelShape, spec: InferenceModelSpec, options: list[PlanOption]
) -> str:
    biggest = max(options, key=lambda o: o.gpus_per_replica, default=None)
    head = (
        f"no node pool can serve {shape.architecture} ({count_params(shape.num_params)} "
        f"parameters) in {spec.quantization.value} at {spec.workload.max_context_tokens} tokens "
        "of context"
    )
    if biggest is None:
        return head
    per_pool = "; ".join(
        f"{o.pool} x{o.gpus_per_replica}: {o.note}"
        for o in options
        if o.gpus_per_replica == max(x.gpus_per_replica for x in options if x.pool == o.pool)
    )
    hint = ""
    if spec.quantization is not Quantization.NF4:
        hint = "; nf4 quantization or a shorter context would need less memory"
    return f"{head}: {per_pool}{hint}"


def _plan(
    shape: ModelShape,
    spec: InferenceModelSpec,
    c: Candidate,
    options: list[PlanOption],
    others: list[Candidate],
    alternatives: list[Candidate],
    unpriced: list[str],
) -> Plan:
    s = c.sizing
    slo_batch = None if s.slo_batch is None else roofline.floor_batch(s.slo_batch)
    return Plan(
        pool=s.pool.name,
        gpu_product=s.pool.gpu_product,
        gpus_per_replica=c.gpus,
        parallelism="single" if c.gpus == 1 else "layer-split",
        compute_dtype=s.acc.compute_dtype,
        quantization=spec.quantization.value,
        critical_batch=roofline.floor_batch(s.critical_batch),
        batch_target=c.batch_target,
        knee_batch=s.knee_batch,
        slo_batch=slo_batch,
        engine=s.row.engine.value,
        kv_context_tokens=math.ceil(s.kv_context),
        max_batch_by_memory=c.max_batch_by_memory,
        weight_bytes=s.weight_bytes,
        kv_bytes_per_token=s.kv_bytes_per_token,
        workspace_bytes=s.workspace_bytes(c.batch_target),
        memory_per_replica_bytes=s.needed_bytes(c.batch_target),
        usable_memory_per_replica_bytes=s.usable(c.gpus),
        bound=c.bound,
        predicted=Prediction(
            tokens_per_second=round(c.tokens_per_second, 1),
            time_per_output_token_ms=round(c.step_seconds * 1000, 2),
            tokens_per_second_per_gpu=round(c.tokens_per_second_per_gpu, 1),
            plateau_tokens_per_second=round(s.terms.plateau_tokens_per_second, 1),
            price_per_replica_hour=_rounded(c.price_per_replica_hour),
            cost_per_million_tokens=_rounded(c.cost_per_million_tokens),
        ),
        reasons=plan_reasons(shape, spec, c, others, alternatives, unpriced),
        options=options,
    )
