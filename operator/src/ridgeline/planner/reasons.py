"""The plan explained, one sentence per step: the numbers that set it, and what was passed over."""

from __future__ import annotations

from ridgeline.api.inference_model import InferenceModelSpec, Quantization, WorkloadMode
from ridgeline.api.plan import Bound
from ridgeline.planner import cost, memory
from ridgeline.planner.sizing import Candidate, Sizing
from ridgeline.planner.step_model import step_model
from ridgeline.planner.throughput import KNEE_FRACTION, StepTerms
from ridgeline.shape import ModelShape

GB = 1e9
GIB = 2**30

_SETTER = {
    Bound.COMPUTE: "the knee (compute roof)",
    Bound.BANDWIDTH: "the knee (weight and KV-cache bandwidth roof)",
    Bound.LATENCY: "the SLO",
    Bound.MEMORY: "memory",
}


def count_params(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _gpus(n: int) -> str:
    return "1 GPU" if n == 1 else f"{n} GPUs"


def _device(s: Sizing, gpus: int) -> str:
    return "the node's CPU" if s.acc.is_cpu else _gpus(gpus)


def plan_reasons(
    shape: ModelShape,
    spec: InferenceModelSpec,
    c: Candidate,
    others: list[Candidate],
    alternatives: list[Candidate],
    unpriced: list[str],
) -> list[str]:
    """``others``: the other pools' best candidates, best first; ``unpriced``: the allowed
    pools without a price (none: the pool was chosen by cost)."""
    s = c.sizing
    acc = s.acc
    q = spec.quantization.value
    bpw = memory.bytes_per_weight(spec.quantization, acc.compute_dtype)
    out = [
        f"Model: {shape.architecture}, {count_params(shape.num_params)} parameters, "
        f"{shape.num_layers} layers, {shape.num_attention_heads} attention heads "
        f"({shape.num_kv_heads} KV heads of dimension {shape.head_dim}).",
        f"Weights: {s.weight_bytes / GB:.2f} GB in {q} ({acc.compute_dtype} compute); KV cache: "
        f"{s.kv_bytes_per_token / 1024:.0f} KiB per token, "
        f"{s.kv_bytes_per_sequence / GIB:.2f} GiB per {s.context}-token sequence.",
        f"Ridge batch on {acc.name}: B* = {acc.dense_flops_per_s / 1e12:.3g} TFLOP/s x {bpw:g} B "
        f"per weight / (2 x {acc.memory_bandwidth_bytes_per_s / 1e12:.2f} TB/s) = "
        f"{s.critical_batch:.0f}: the compute ridge.",
        _step_model_reason(spec, s),
        _batches_reason(spec, c),
        _gpus_reason(c, alternatives),
        f"Predicted: {c.step_seconds * 1000:.1f} ms per decode step at batch {c.batch_target}, "
        f"{c.tokens_per_second:.0f} tokens/s per replica ({c.tokens_per_second_per_gpu:.0f} per "
        f"{'node' if acc.is_cpu else 'GPU'}; the plateau is "
        f"{s.terms.plateau_tokens_per_second:.0f})"
        + (", one GPU computing at a time." if c.gpus > 1 else "."),
    ]
    if (price := c.price_per_replica_hour) is not None:
        out.append(_cost_reason(c, price))
    if others:
        out.append(_pools_reason(c, others, unpriced))
    if s.pool.shared:
        out.append(
            f"The pool's GPUs are shared by {s.pool.shared_by} replicas (time-slicing or "
            f"MPS): each replica is planned on 1/{s.pool.shared_by} of a GPU's memory, "
            "bandwidth and compute."
        )
    if spec.quantization is not Quantization.NONE:
        out.append(_quantization_reason(shape, spec, c))
    return out


def _cost_reason(c: Candidate, price: float) -> str:
    pool = c.sizing.pool
    assert pool.price_per_node_hour is not None
    if pool.is_cpu:
        share = "the whole node"
    else:
        share = f"{c.gpus} of the node's {pool.gpus_per_node} GPUs"
        if pool.shared_by:
            share += f", each shared by {pool.shared_by} replicas"
    per_million = cost.cost_per_million_tokens(price, c.tokens_per_second)
    return (
        f"Cost: {cost.money(price)} per replica-hour ({share} at "
        f"{cost.money(pool.price_per_node_hour)} per node-hour), "
        f"{cost.money(per_million)} per million tokens at batch {c.batch_target} "
        f"({c.tokens_per_second:.0f} tokens/s)."
    )


def _pools_reason(c: Candidate, others: list[Candidate], unpriced: list[str]) -> str:
    def describe(o: Candidate) -> str:
        per_million = o.cost_per_million_tokens
        price = "" if per_million is None else f", {cost.money(per_million)} per million tokens"
        return (
            f"{o.sizing.pool.name} ({_gpus(o.gpus)}, {o.tokens_per_second_per_gpu:.0f} per "
            f"GPU{price})"
        )

    head = f"Pool {c.sizing.pool.name} chosen over {', '.join(describe(o) for o in others)}"
    mine, nxt = c.cost_per_million_tokens, others[0]
    if unpriced or mine is None or nxt.cost_per_million_tokens is None:
        rule = "most tokens/s per GPU, then fewest GPUs"
        if unpriced:
            rule += f" (not every pool has a price: {', '.join(unpriced)} has none)"
        return f"{head}: {rule}."
    theirs = nxt.cost_per_million_tokens
    saving = "the same" if theirs == mine else f"{1 - mine / theirs:.0%} less"
    out = (
        f"{head}: the lowest cost per million tokens, {cost.money(mine)} against "
        f"{cost.money(theirs)} on {nxt.sizing.pool.name}, the next best ({saving})"
    )
    if nxt.tokens_per_second_per_gpu > c.tokens_per_second_per_gpu:
        out += (
            f", though {nxt.sizing.pool.name} has more tokens/s per GPU "
            f"({nxt.tokens_per_second_per_gpu:.0f} vs {c.tokens_per_second_per_gpu:.0f})"
        )
    return out + "."


def _step_model_reason(spec: InferenceModelSpec, s: Sizing) -> str:
    row = s.row
    w = spec.workload
    rows = "rows padded to the longest in flight" if row.padded_rows else "the mean over a decode"
    weights = (
        f"{row.efficiency:.0%} efficiency"
        if row.weight_efficiency == row.efficiency
        else f"{row.efficiency:.0%} efficiency ({row.weight_efficiency:.1%} on the weights)"
    )
    return (
        f"Step model ({row.engine.value}, {spec.quantization.value}): t(B) = "
        f"{s.terms.overhead_s * 1000:.2f} ms ({row.host_s_per_layer * 1000:.2f} ms of host time "
        f"per layer, {row.overhead_s * 1000:.2f} ms per step) + the roofline at {weights}, "
        f"the KV cache moved "
        f"{row.kv_passes:g} times per step at {s.kv_context:.0f} tokens per sequence (typical "
        f"prompt {w.prompt_tokens} + output {w.output_tokens}, {rows}); source: {row.source}."
    )


def _batches_reason(spec: InferenceModelSpec, c: Candidate) -> str:
    s = c.sizing
    roof = "compute" if s.terms.compute_bound_plateau else "KV-cache bandwidth"
    slo = spec.workload.slo
    if spec.workload.mode is WorkloadMode.BATCH:
        slo_text = "no SLO (batch mode)"
    elif slo is None or s.slo_batch is None:
        slo_text = "no SLO"
    else:
        slo_text = f"SLO batch {max(s.slo_batch, 0):.0f} ({slo.time_per_output_token_ms:g} ms)"
    return (
        f"Batch target {c.batch_target}, set by {_SETTER[c.bound]}: knee {s.knee_batch} "
        f"({KNEE_FRACTION:.0%} of the {roof} plateau), {slo_text}, memory batch "
        f"{c.max_batch_by_memory} on {_device(s, c.gpus)} at {s.context} tokens, "
        f"B* {s.critical_batch:.0f}."
    )


def _gpus_reason(c: Candidate, alternatives: list[Candidate]) -> str:
    s = c.sizing
    usable = s.usable(c.gpus) / GIB
    mode = _device(s, c.gpus)
    smaller = [a for a in alternatives if a.gpus < c.gpus]
    larger = [a for a in alternatives if a.gpus > c.gpus]
    if c.bound is Bound.MEMORY:
        head = (
            f"Memory-bound: {mode} ({usable:.1f} GiB usable) hold the weights and "
            f"{c.max_batch_by_memory} sequences at full context, short of the "
            f"{s.desired_batch:.0f} the knee and SLO allow."
        )
    else:
        what = "Replica size" if s.acc.is_cpu else "GPUs per replica"
        head = (
            f"{what}: {mode} ({usable:.1f} GiB usable) is the fewest that hold the weights plus "
            f"{c.batch_target} sequences at {s.context} tokens."
        )
    if smaller:
        best_small = max(smaller, key=lambda a: a.tokens_per_second_per_gpu)
        head += (
            f" Fewer GPUs hold only {best_small.max_batch_by_memory} sequences: "
            f"{best_small.tokens_per_second_per_gpu:.0f} tokens/s per GPU on "
            f"{_gpus(best_small.gpus)} vs {c.tokens_per_second_per_gpu:.0f}."
        )
    if larger:
        big = min(larger, key=lambda a: a.gpus)
        gain = big.tokens_per_second / c.tokens_per_second - 1
        head += (
            f" More GPUs cannot help: {_gpus(big.gpus)} would give {gain:+.0%} tokens/s "
            f"({big.tokens_per_second_per_gpu:.0f} per GPU vs {c.tokens_per_second_per_gpu:.0f}); "
            "a layer split adds memory, not speed, so add replicas for throughput."
        )
    return head


def _quantization_reason(shape: ModelShape, spec: InferenceModelSpec, c: Candidate) -> str:
    """The same batch in 16-bit on the same GPU, so the numbers say what bitsandbytes costs."""
    s = c.sizing
    acc = s.acc
    row16 = step_model(s.row.engine, Quantization.NONE, acc.is_cpu)
    w16 = memory.weight_bytes(shape, Quantization.NONE, acc.compute_dtype)
    t16 = StepTerms.of(
        row16,
        shape.num_layers,
        shape.num_params,
        w16,
        s.kv_context,
        s.kv_bytes_per_token,
        acc.dense_flops_per_s,
        acc.memory_bandwidth_bytes_per_s,
    ).step_seconds(c.batch_target)
    ratio = c.step_seconds / t16
    return (
        f"bitsandbytes {spec.quantization.value} dequantizes every weight on every step: "
        f"{c.step_seconds * 1000:.1f} ms per step vs {t16 * 1000:.1f} ms in 16-bit at the same "
        f"batch ({ratio:.1f}x). It buys memory ({w16 / GB:.1f} GB of weights down to "
        f"{s.weight_bytes / GB:.1f}), not speed."
    )
