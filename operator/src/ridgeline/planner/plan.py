"""Size a model for each allowed node pool and choose one.

Rule (design section 3): a replica is as many GPUs as it takes to hold the weights plus the
KV cache of the efficient batch at the declared context. The efficient batch is the ridge batch
B*, capped in online mode by the time-per-output-token SLO. GPU counts are powers of two that
divide the attention and KV heads, at most the GPUs of one node. Among pools: fewest GPUs per
replica, then the most predicted tokens/s per GPU, then the pool name.

The serving engine is transformers with ``device_map``: a layer split, where memory adds up
over the GPUs but only one computes at a time. So the step time of N GPUs is that of one GPU
holding everything, and B* does not move with N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ridgeline.api.inference_model import InferenceModelSpec, Quantization, WorkloadMode
from ridgeline.api.plan import Bound, Plan, PlanOption, Prediction
from ridgeline.hardware import Accelerator
from ridgeline.planner import memory, roofline
from ridgeline.planner.pools import NodePool
from ridgeline.shape import ModelShape

GB = 1e9
GIB = 2**30


class InfeasiblePlanError(ValueError):
    """No allowed pool can serve the model; ``options`` says why for each."""

    def __init__(self, message: str, options: list[PlanOption]) -> None:
        super().__init__(message)
        self.options = options


@dataclass(frozen=True)
class _Sizing:
    """The numbers of one pool that do not depend on the GPU count."""

    pool: NodePool
    acc: Accelerator
    weight_bytes: int
    kv_bytes_per_token: int
    workspace_bytes: int
    critical_batch: float
    slo_batch: float | None
    desired_batch: float

    def kv_bytes_per_sequence(self, context: int) -> int:
        return context * self.kv_bytes_per_token

    def usable(self, gpus: int) -> int:
        return memory.usable_memory_bytes(self.acc.memory_bytes, gpus)

    def max_batch_by_memory(self, gpus: int, context: int) -> int:
        free = self.usable(gpus) - self.weight_bytes - self.workspace_bytes
        return max(0, free // self.kv_bytes_per_sequence(context))

    def needed_bytes(self, batch: float, context: int) -> float:
        return (
            self.weight_bytes + self.workspace_bytes + batch * self.kv_bytes_per_sequence(context)
        )


@dataclass(frozen=True)
class _Candidate:
    sizing: _Sizing
    gpus: int
    batch_target: int
    max_batch_by_memory: int
    bound: Bound
    step_seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.batch_target / self.step_seconds

    @property
    def tokens_per_second_per_gpu(self) -> float:
        return self.tokens_per_second / self.gpus


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


def _sizing(shape: ModelShape, spec: InferenceModelSpec, pool: NodePool) -> _Sizing:
    acc = pool.accelerator()
    dtype = acc.compute_dtype
    context = spec.workload.max_context_tokens
    weights = memory.weight_bytes(shape, spec.quantization, dtype)
    kv = memory.kv_bytes_per_token(shape, memory.dtype_bytes(dtype))
    b_star = roofline.ridge_batch(
        acc.dense_flops_per_s,
        memory.bytes_per_weight(spec.quantization, dtype),
        acc.memory_bandwidth_bytes_per_s,
    )
    slo_batch = None
    desired = b_star
    slo = spec.workload.slo
    if spec.workload.mode is WorkloadMode.ONLINE and slo is not None:
        slo_batch = roofline.batch_within_step_time(
            slo.time_per_output_token_ms / 1000,
            shape.num_params,
            weights,
            context,
            kv,
            acc.dense_flops_per_s,
            acc.memory_bandwidth_bytes_per_s,
        )
        desired = min(b_star, slo_batch)
    # Sized for B* rather than the final batch, so that a longer context never shrinks it.
    workspace = memory.workspace_bytes(shape, b_star, context, dtype)
    return _Sizing(pool, acc, weights, kv, workspace, b_star, slo_batch, desired)


def _step_seconds(shape: ModelShape, s: _Sizing, batch: int, context: int) -> float:
    return roofline.decode_step_seconds(
        shape.num_params,
        s.weight_bytes,
        batch,
        context,
        s.kv_bytes_per_token,
        s.acc.dense_flops_per_s,
        s.acc.memory_bandwidth_bytes_per_s,
    )


def _evaluate_pool(
    shape: ModelShape, spec: InferenceModelSpec, pool: NodePool
) -> tuple[_Candidate | None, list[PlanOption]]:
    context = spec.workload.max_context_tokens
    s = _sizing(shape, spec, pool)
    counts = gpu_counts(pool, shape)
    product = pool.gpu_product

    def option(gpus: int, feasible: bool, note: str, **numbers: float | int | None) -> PlanOption:
        return PlanOption(
            pool=pool.name,
            gpu_product=product,
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
    holds_weights = s.max_batch_by_memory(counts[-1], context) >= 1
    if s.slo_batch is not None and s.slo_batch < 1 and holds_weights:
        one = _step_seconds(shape, s, 1, context) * 1000
        assert spec.workload.slo is not None
        note = (
            f"one sequence takes {one:.1f} ms per token on {s.acc.name}, over the "
            f"{spec.workload.slo.time_per_output_token_ms:g} ms SLO (more GPUs do not help: "
            "a layer split computes on one GPU at a time)"
        )
        return None, [option(n, False, note) for n in counts]

    options: list[PlanOption] = []
    viable: list[_Candidate] = []
    for gpus in counts:
        b_mem = s.max_batch_by_memory(gpus, context)
        if b_mem < 1:
            short = s.needed_bytes(1, context) - s.usable(gpus)
            options.append(
                option(
                    gpus,
                    False,
                    (
                        f"weights {s.weight_bytes / GB:.2f} GB + one {context}-token sequence "
                        f"{s.kv_bytes_per_sequence(context) / GIB:.2f} GiB + workspace exceed "
                        f"{gpus} x {memory.USABLE_MEMORY_FRACTION:.0%} of "
                        f"{s.acc.memory_bytes / GIB:.1f} GiB by {short / GB:.2f} GB"
                    ),
                    max_batch_by_memory=0,
                )
            )
            continue
        target = max(1, roofline.floor_batch(min(s.desired_batch, b_mem)))
        if b_mem < s.desired_batch:
            bound = Bound.MEMORY
        elif s.slo_batch is not None and s.slo_batch < s.critical_batch:
            bound = Bound.LATENCY
        else:
            bound = Bound.COMPUTE
        cand = _Candidate(s, gpus, target, b_mem, bound, _step_seconds(shape, s, target, context))
        viable.append(cand)
        options.append(
            option(
                gpus,
                True,
                "",
                batch_target=target,
                max_batch_by_memory=b_mem,
                tokens_per_second=round(cand.tokens_per_second, 1),
            )
        )
    if not viable:
        return None, options
    reaching = [c for c in viable if c.bound is not Bound.MEMORY]
    chosen = reaching[0] if reaching else viable[-1]
    for i, opt in enumerate(options):
        if not opt.feasible:
            continue
        if opt.gpus_per_replica == chosen.gpus:
            note = (
                "smallest GPU count that reaches the batch target"
                if reaching
                else ("most GPUs a node offers; still short of the batch target")
            )
        elif opt.gpus_per_replica < chosen.gpus:
            note = (
                f"holds only {opt.max_batch_by_memory} sequences; the target is "
                f"{roofline.floor_batch(s.desired_batch)}"
            )
        else:
            note = f"more GPUs than needed for batch {chosen.batch_target}"
        options[i] = opt.model_copy(update={"note": note})
    return chosen, options


def _pick(candidates: list[_Candidate]) -> _Candidate:
    return min(candidates, key=lambda c: (c.gpus, -c.tokens_per_second_per_gpu, c.sizing.pool.name))


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
    candidates: list[_Candidate] = []
    options: list[PlanOption] = []
    for pool in allowed:
        cand, pool_options = _evaluate_pool(shape, spec, pool)
        options.extend(pool_options)
        if cand is not None:
            candidates.append(cand)
    if not candidates:
        raise InfeasiblePlanError(_infeasible_message(shape, spec, options), options)
    best = _pick(candidates)
    options = [
        o.model_copy(update={"chosen": True})
        if o.pool == best.sizing.pool.name and o.gpus_per_replica == best.gpus
        else o
        for o in options
    ]
    return _plan(shape, spec, best, options, others=[c for c in candidates if c is not best])


def _infeasible_message(
    shape: ModelShape, spec: InferenceModelSpec, options: list[PlanOption]
) -> str:
    biggest = max(options, key=lambda o: o.gpus_per_replica, default=None)
    head = (
        f"no node pool can serve {shape.architecture} ({_count(shape.num_params)} parameters) "
        f"in {spec.quantization.value} at {spec.workload.max_context_tokens} tokens of context"
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
    c: _Candidate,
    options: list[PlanOption],
    others: list[_Candidate],
) -> Plan:
    s = c.sizing
    context = spec.workload.max_context_tokens
    needed = s.needed_bytes(c.batch_target, context)
    return Plan(
        pool=s.pool.name,
        gpu_product=s.pool.gpu_product,
        gpus_per_replica=c.gpus,
        parallelism="single" if c.gpus == 1 else "layer-split",
        compute_dtype=s.acc.compute_dtype,
        quantization=spec.quantization.value,
        critical_batch=roofline.floor_batch(s.critical_batch),
        batch_target=c.batch_target,
        max_batch_by_memory=c.max_batch_by_memory,
        weight_bytes=s.weight_bytes,
        kv_bytes_per_token=s.kv_bytes_per_token,
        workspace_bytes=s.workspace_bytes,
        memory_per_replica_bytes=math.ceil(needed),
        usable_memory_per_replica_bytes=s.usable(c.gpus),
        bound=c.bound,
        predicted=Prediction(
            tokens_per_second=round(c.tokens_per_second, 1),
            time_per_output_token_ms=round(c.step_seconds * 1000, 2),
            tokens_per_second_per_gpu=round(c.tokens_per_second_per_gpu, 1),
        ),
        reasons=_reasons(shape, spec, c, others),
        options=options,
    )


def _reasons(
    shape: ModelShape, spec: InferenceModelSpec, c: _Candidate, others: list[_Candidate]
) -> list[str]:
    s = c.sizing
    acc = s.acc
    context = spec.workload.max_context_tokens
    q = spec.quantization.value
    bpw = memory.bytes_per_weight(spec.quantization, acc.compute_dtype)
    out = [
        f"Model: {shape.architecture}, {_count(shape.num_params)} parameters, "
        f"{shape.num_layers} layers, {shape.num_attention_heads} attention heads "
        f"({shape.num_kv_heads} KV heads of dimension {shape.head_dim}).",
        f"Weights: {s.weight_bytes / GB:.2f} GB in {q} ({acc.compute_dtype} compute); KV cache: "
        f"{s.kv_bytes_per_token / 1024:.0f} KiB per token, "
        f"{s.kv_bytes_per_sequence(context) / GIB:.2f} GiB per {context}-token sequence.",
        f"Ridge batch on {acc.name}: B* = {acc.dense_flops_per_s / 1e12:.3g} TFLOP/s x {bpw:g} B "
        f"per weight / (2 x {acc.memory_bandwidth_bytes_per_s / 1e12:.2f} TB/s) = "
        f"{s.critical_batch:.0f}.",
    ]
    slo = spec.workload.slo
    if spec.workload.mode is WorkloadMode.BATCH:
        out.append(f"Batch mode: aim for B* = {s.critical_batch:.0f} sequences per replica.")
    elif slo is None:
        out.append(
            f"Online mode without an SLO: aim for B* = {s.critical_batch:.0f} sequences per "
            "replica."
        )
    else:
        assert s.slo_batch is not None
        out.append(
            f"Online mode: the {slo.time_per_output_token_ms:g} ms per-token SLO allows "
            f"{max(s.slo_batch, 0):.0f} sequences at full context; aim for "
            f"min(B*, that) = {s.desired_batch:.0f}."
        )
    device = "the node's CPU" if acc.is_cpu else "one GPU"
    mode = device if c.gpus == 1 else f"{c.gpus} GPUs, layers split across them"
    usable = memory.usable_memory_bytes(acc.memory_bytes, c.gpus)
    if c.bound is Bound.MEMORY:
        out.append(
            f"Memory-bound: {mode} ({usable / GIB:.1f} GiB usable, the most this pool offers "
            f"that divides the heads) hold the weights and {c.max_batch_by_memory} sequences; "
            f"batch lowered from {s.desired_batch:.0f} to {c.batch_target}."
        )
    else:
        what = "Replica size" if acc.is_cpu else "GPUs per replica"
        out.append(
            f"{what}: {mode} ({usable / GIB:.1f} GiB usable) is the fewest that "
            f"hold the weights plus {c.batch_target} sequences at {context} tokens."
        )
    out.append(
        f"Predicted: {c.step_seconds * 1000:.1f} ms per decode step at batch {c.batch_target}, "
        f"{c.tokens_per_second:.0f} tokens/s per replica ({c.tokens_per_second_per_gpu:.0f} per "
        f"{'node' if acc.is_cpu else 'GPU'}), assuming "
        f"{roofline.DECODE_EFFICIENCY:.0%} of the roofline"
        + (" with one GPU computing at a time." if c.gpus > 1 else ".")
    )
    if others:
        names = ", ".join(f"{o.sizing.pool.name} ({_gpus(o.gpus)})" for o in others)
        out.append(
            f"Pool {s.pool.name} chosen over {names}: fewest GPUs per replica, then most "
            "tokens/s per GPU."
        )
    if s.pool.shared:
        out.append(
            f"The pool's GPUs are shared by {s.pool.shared_by} replicas (time-slicing or "
            f"MPS): each replica is planned on 1/{s.pool.shared_by} of a GPU's memory, "
            "bandwidth and compute."
        )
    if spec.quantization is not Quantization.NONE and not acc.is_cpu:
        out.append(
            "bitsandbytes kernels run below this roofline at batch > 1 (reference section 3e): "
            f"{q} buys memory, not speed."
        )
    return out


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _gpus(n: int) -> str:
    return "1 GPU" if n == 1 else f"{n} GPUs"
