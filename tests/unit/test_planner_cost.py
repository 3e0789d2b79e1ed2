"""Cost per million tokens in the plan, and the choice of the cheapest pool that meets the
objective where every allowed pool has a price."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ridgeline.api import InferenceModelSpec
from ridgeline.planner import InfeasiblePlanError, NodePool, parse_pools, plan_model
from ridgeline.planner.at_batch import batch_text, predict_at_batch
from ridgeline.planner.cost import replica_share
from ridgeline.planner.report import options_table, plan_text
from ridgeline.shape import ModelShape

ShapeOf = Callable[[str], ModelShape]


def spec(**kw: object) -> InferenceModelSpec:
    base: dict[str, object] = {"model": {"uri": "s3://models/x"}}
    base.update(kw)
    return InferenceModelSpec.model_validate(base)


def priced(pool: NodePool, price: float | None) -> NodePool:
    return pool.model_copy(update={"price_per_node_hour": price})


H100 = NodePool(name="h100", gpu_product="NVIDIA-H100-80GB-HBM3", gpus_per_node=8)
A100_40 = NodePool(name="a100", gpu_product="NVIDIA-A100-SXM4-40GB", gpus_per_node=8)
L4 = NodePool(name="l4", gpu_product="NVIDIA-L4", gpus_per_node=1)
H200 = NodePool(name="h200", gpu_product="NVIDIA-H200", gpus_per_node=8)
CPU = NodePool(name="cpu", gpu_product="cpu", gpus_per_node=0, memory_gib=16, cpus=8)
ONLINE = {"mode": "online", "maxContextTokens": 2048, "slo": {"timePerOutputTokenMs": 60}}


def formula(node_price: float, gpus: int, gpus_per_node: int, tokens_per_second: float) -> float:
    return node_price * gpus / gpus_per_node / (tokens_per_second * 3600) * 1e6


def test_cost_per_million_tokens_is_the_formula_for_the_plan_and_every_option(
    shape_of: ShapeOf,
) -> None:
    plan = plan_model(
        shape_of("llama-3.1-8b"),
        spec(workload={"mode": "batch", "maxContextTokens": 4096}),
        [priced(H100, 55.04)],
    )
    p = plan.predicted
    assert p.price_per_replica_hour == pytest.approx(55.04 * plan.gpus_per_replica / 8)
    want = formula(55.04, plan.gpus_per_replica, 8, p.tokens_per_second)
    assert p.cost_per_million_tokens is not None
    assert abs(p.cost_per_million_tokens / want - 1) < 0.005
    feasible = [o for o in plan.options if o.feasible]
    assert len(feasible) > 1
    for o in feasible:
        assert o.tokens_per_second is not None
        assert o.cost_per_million_tokens is not None
        want = formula(55.04, o.gpus_per_replica, 8, o.tokens_per_second)
        assert abs(o.cost_per_million_tokens / want - 1) < 0.005
    predicted = plan.to_api()["predicted"]
    assert isinstance(predicted, dict)
    assert predicted["costPerMillionTokens"] == p.cost_per_million_tokens


def test_a_cpu_replica_costs_its_whole_node_and_a_shared_gpu_its_share(shape_of: ShapeOf) -> None:
    plan = plan_model(
        shape_of("tiny-llama"),
        spec(workload={"maxContextTokens": 1024}, accelerators=["cpu"]),
        [priced(CPU, 0.36)],
    )
    assert replica_share(CPU, 1) == 1
    assert plan.predicted.price_per_replica_hour == 0.36
    assert plan.predicted.cost_per_million_tokens == pytest.approx(
        formula(0.36, 1, 1, plan.predicted.tokens_per_second), rel=0.005
    )
    shared = NodePool(name="t4s", gpu_product="Tesla-T4-SHARED", gpus_per_node=4, shared_by=2)
    assert replica_share(shared, 1) == 1 / 8
    assert replica_share(H100, 2) == 1 / 4


def test_the_cheaper_pool_per_token_wins_over_more_tokens_per_gpu(shape_of: ShapeOf) -> None:
    shape = shape_of("llama-3.1-8b")
    s = spec(workload=ONLINE)
    unpriced = plan_model(shape, s, [H100, A100_40])
    assert unpriced.pool == "h100"  # the old rule: most tokens/s per GPU
    # An A100 node at 8 an hour: 1 a GPU-hour against 6.88 for an H100's, which more than
    # makes up for its fewer tokens/s per GPU.
    plan = plan_model(shape, s, [priced(H100, 55.04), priced(A100_40, 8.0)])
    assert plan.pool == "a100"
    h100 = next(o for o in plan.options if o.pool == "h100" and o.gpus_per_replica == 1)
    assert h100.tokens_per_second_per_gpu is not None
    assert h100.cost_per_million_tokens
    assert h100.tokens_per_second_per_gpu > plan.predicted.tokens_per_second_per_gpu
    assert plan.predicted.cost_per_million_tokens is not None
    assert plan.predicted.cost_per_million_tokens < h100.cost_per_million_tokens
    (why,) = [r for r in plan.reasons if r.startswith("Pool a100 chosen over")]
    assert "the lowest cost per million tokens" in why
    assert "on h100, the next best" in why
    assert "though h100 has more tokens/s per GPU" in why
    assert any(r.startswith("Cost: 1.00 per replica-hour (1 of the node's 8") for r in plan.reasons)
    # the option table prints the cost column, the summary the plan's cost
    table = options_table(plan.options)
    assert "cost/Mtok" in table.splitlines()[0]
    assert f"{plan.predicted.cost_per_million_tokens:.2f}" in table
    assert "per million tokens" in plan_text("m", plan).splitlines()[0]


def test_with_one_unpriced_pool_the_old_rule_stands(shape_of: ShapeOf) -> None:
    shape = shape_of("llama-3.1-8b")
    s = spec(workload=ONLINE)
    unpriced = plan_model(shape, s, [H100, A100_40])
    plan = plan_model(shape, s, [priced(H100, 55.04), A100_40.model_copy()])
    # the A100 would be cheaper at 8 an hour, but without its price nothing is compared
    cheap = plan_model(shape, s, [priced(H100, 55.04), priced(A100_40, 8.0)])
    assert cheap.pool == "a100"
    assert (plan.pool, plan.gpus_per_replica) == (unpriced.pool, unpriced.gpus_per_replica)
    (why,) = [r for r in plan.reasons if r.startswith("Pool h100 chosen over")]
    assert "most tokens/s per GPU, then fewest GPUs" in why
    assert "a100 has none" in why
    # the priced pool's options still carry their cost; the unpriced ones none
    assert plan.predicted.cost_per_million_tokens is not None
    assert all(o.cost_per_million_tokens is None for o in plan.options if o.pool == "a100")


def test_without_prices_nothing_about_cost_appears(shape_of: ShapeOf) -> None:
    plan = plan_model(shape_of("llama-3.1-8b"), spec(workload=ONLINE), [H100, A100_40])
    predicted = plan.to_api()["predicted"]
    assert isinstance(predicted, dict)
    assert "costPerMillionTokens" not in predicted
    assert "pricePerReplicaHour" not in predicted
    assert not any("cost" in r.lower() for r in plan.reasons)
    assert "cost/Mtok" not in options_table(plan.options)


def test_plan_batch_prints_the_cost_at_n(shape_of: ShapeOf) -> None:
    shape = shape_of("llama-3.1-8b")
    s = spec(workload=ONLINE)
    pool = priced(H100, 55.04)
    plan = plan_model(shape, s, [pool])
    at = predict_at_batch(shape, s, plan, pool, 8)
    assert at.cost_per_million_tokens == pytest.approx(formula(55.04, 1, 8, at.tokens_per_second))
    text = batch_text(at, plan)
    assert f"{at.cost_per_million_tokens:.2f} per million tokens at 6.88 per replica-hour" in text
    unpriced = predict_at_batch(shape, s, plan, H100, 8)
    assert "per million tokens" not in batch_text(unpriced, plan)


def test_pools_files_take_a_price_and_refuse_a_negative_one() -> None:
    (pool,) = parse_pools(
        [
            {
                "name": "h100",
                "gpuProduct": "NVIDIA-H100-80GB-HBM3",
                "gpusPerNode": 8,
                "pricePerNodeHour": 55.04,
            }
        ]
    )
    assert pool.price_per_node_hour == 55.04
    for bad in (-1, float("nan"), "cheap"):
        with pytest.raises(ValidationError):
            NodePool.model_validate(
                {"name": "x", "gpuProduct": "NVIDIA-L4", "gpusPerNode": 1, "pricePerNodeHour": bad}
            )


# ---- property: a dearer pool is never more likely to be chosen --------------------------------

MODELS = ["llama-3.1-8b", "qwen2-7b", "mistral-7b-v0.3"]
GPU_POOLS = [H100, A100_40, L4, H200]
# Wide ranges, so that a raise can carry a pool past any other (an L4 token costs ~100x an H100's
# at the same price per node).
prices = st.floats(min_value=0.01, max_value=1000, allow_nan=False)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    model=st.sampled_from(MODELS),
    pool_prices=st.lists(prices, min_size=4, max_size=4),
    raised=st.integers(min_value=0, max_value=3),
    factor=st.floats(min_value=1.0, max_value=1000, allow_nan=False),
    context=st.sampled_from([1024, 2048, 4096, 8192]),
    mode=st.sampled_from(["online", "batch"]),
    slo=st.sampled_from([30.0, 60.0, 200.0]),
)
def test_raising_a_pools_price_never_makes_it_more_likely_to_be_chosen(
    shape_of: ShapeOf,
    model: str,
    pool_prices: list[float],
    raised: int,
    factor: float,
    context: int,
    mode: str,
    slo: float,
) -> None:
    workload: dict[str, object] = {"mode": mode, "maxContextTokens": context}
    if mode == "online":
        workload["slo"] = {"timePerOutputTokenMs": slo}
    s = spec(workload=workload)
    shape = shape_of(model)
    before = [priced(p, price) for p, price in zip(GPU_POOLS, pool_prices, strict=True)]
    after = list(before)
    target = before[raised]
    after[raised] = priced(target, pool_prices[raised] * factor)
    try:
        chosen_before = plan_model(shape, s, before).pool
    except InfeasiblePlanError:
        return  # no pool meets the objective: the price cannot change that
    chosen_after = plan_model(shape, s, after).pool
    if chosen_after == target.name:
        assert chosen_before == target.name
    if chosen_before != target.name:
        assert chosen_after == chosen_before
