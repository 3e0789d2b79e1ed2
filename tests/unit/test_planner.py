"""Plans: choice of GPU count and pool, bounds, infeasibility, and properties."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ridgeline.api import Bound, InferenceModelSpec, Quantization
from ridgeline.api.crd import build_crd
from ridgeline.config_files import load_pools
from ridgeline.manifest import load_inference_model
from ridgeline.planner import InfeasiblePlanError, NodePool, gpu_counts, plan_model
from ridgeline.planner import memory as mem
from ridgeline_dev.demo_plans import EXAMPLE_MODELS
from tests.conftest import EXAMPLES


def spec(**kw: object) -> InferenceModelSpec:
    base: dict[str, object] = {"model": {"uri": "s3://models/x"}}
    base.update(kw)
    return InferenceModelSpec.model_validate(base)


H100 = NodePool(name="h100", gpu_product="NVIDIA-H100-80GB-HBM3", gpus_per_node=8)
A100_40 = NodePool(name="a100", gpu_product="NVIDIA-A100-SXM4-40GB", gpus_per_node=8)
L4 = NodePool(name="l4", gpu_product="NVIDIA-L4", gpus_per_node=1)
H200 = NodePool(name="h200", gpu_product="NVIDIA-H200", gpus_per_node=8)
CPU = NodePool(name="cpu", gpu_product="cpu", gpus_per_node=0, memory_gib=16, cpus=8)


def test_batch_mode_targets_the_knee_and_keeps_b_star_as_the_ridge(shape_of) -> None:
    plan = plan_model(
        shape_of("llama-3.1-8b"),
        spec(workload={"mode": "batch", "maxContextTokens": 1024}),
        [H200],
    )
    assert plan.critical_batch == 206
    # The engine's host time per step (32 layers) dwarfs a sequence's KV reads, so tokens/s
    # keeps rising past B* up to the knee, and the knee lies past what memory holds: memory
    # sets the target, and the reasons still show the knee and B*.
    assert plan.knee_batch is not None
    assert plan.batch_target == plan.max_batch_by_memory < plan.knee_batch
    assert plan.bound is Bound.MEMORY
    assert plan.gpus_per_replica == 1
    assert plan.parallelism == "single"
    batches = next(r for r in plan.reasons if r.startswith("Batch target"))
    for part in ("knee", "memory batch", "B* 206", "no SLO"):
        assert part in batches


def test_the_knee_sets_the_target_when_memory_allows(shape_of) -> None:
    # On a CPU pool (no host term measured there) a small model's KV reads set the knee well
    # inside memory: the target is the knee, which reaches 90% of the plateau.
    shape = shape_of("tiny-llama")
    workload = {"mode": "batch", "maxContextTokens": 2048}
    plan = plan_model(shape, spec(workload=workload, accelerators=["cpu"]), [CPU])
    assert plan.knee_batch is not None
    assert plan.batch_target == plan.knee_batch < plan.max_batch_by_memory
    assert plan.predicted.plateau_tokens_per_second is not None
    assert plan.predicted.tokens_per_second >= 0.9 * plan.predicted.plateau_tokens_per_second
    assert any("set by the knee" in r for r in plan.reasons)


def test_long_context_buys_no_gpu_that_adds_no_speed(shape_of) -> None:
    # The case: at 4096 tokens B* alone asked for 4 GPUs for +15% tokens/s.
    plan = plan_model(
        shape_of("llama-3.1-8b"), spec(workload={"mode": "batch", "maxContextTokens": 4096}), [H100]
    )
    assert plan.gpus_per_replica == 1
    larger = [o for o in plan.options if o.gpus_per_replica > 1]
    assert larger
    for o in larger:
        assert o.tokens_per_second_per_gpu is not None
        assert o.tokens_per_second_per_gpu < plan.predicted.tokens_per_second_per_gpu
        assert "add replicas instead" in o.note
    gpus = next(r for r in plan.reasons if r.startswith(("GPUs per replica", "Memory-bound")))
    assert "More GPUs cannot help" in gpus
    assert "replicas" in gpus


def test_more_gpus_only_where_tokens_per_gpu_rise(shape_of) -> None:
    # 70B in NF4 at 8k fits one H100 with 13 sequences; two hold 3x as many.
    plan = plan_model(
        shape_of("llama-3.1-70b"),
        spec(quantization="nf4", workload={"mode": "batch", "maxContextTokens": 8192}),
        [H100],
    )
    assert plan.gpus_per_replica > 1
    by_gpus = {o.gpus_per_replica: o for o in plan.options if o.feasible}
    assert by_gpus[1].tokens_per_second_per_gpu is not None
    assert by_gpus[1].tokens_per_second_per_gpu < plan.predicted.tokens_per_second_per_gpu
    assert any("Fewer GPUs hold only" in r for r in plan.reasons)


def test_slo_caps_the_batch_and_says_latency(shape_of) -> None:
    plan = plan_model(
        shape_of("llama-3.1-8b"),
        spec(workload={"maxContextTokens": 4096, "slo": {"timePerOutputTokenMs": 60}}),
        [H100],
    )
    assert plan.bound is Bound.LATENCY
    assert plan.slo_batch is not None
    assert plan.knee_batch is not None
    assert plan.batch_target == plan.slo_batch < plan.knee_batch
    assert plan.predicted.time_per_output_token_ms <= 60
    assert any("set by the SLO" in r for r in plan.reasons)


def test_quantized_plans_are_slower_and_fail_an_slo_that_bf16_meets(shape_of) -> None:
    shape = shape_of("llama-3.1-8b")
    workload = {"maxContextTokens": 2048, "slo": {"timePerOutputTokenMs": 50}}
    bf16 = plan_model(shape, spec(workload=workload), [H100])
    assert bf16.predicted.time_per_output_token_ms <= 50
    for quant in ("int8", "nf4"):
        with pytest.raises(InfeasiblePlanError, match="over the 50 ms SLO"):
            plan_model(shape, spec(quantization=quant, workload=workload), [H100])
    batch = {"mode": "batch", "maxContextTokens": 2048}
    nf4 = plan_model(shape, spec(quantization="nf4", workload=batch), [H100])
    at_one = plan_model(shape, spec(workload=batch), [H100])
    assert nf4.weight_bytes < at_one.weight_bytes / 2
    assert any("buys memory" in r and "not speed" in r for r in nf4.reasons)


def test_typical_lengths_set_the_step_time_and_max_context_the_memory(shape_of) -> None:
    shape = shape_of("llama-3.1-8b")

    def plan_for(**lengths: int):
        workload = {"mode": "batch", "maxContextTokens": 8192, **lengths}
        return plan_model(shape, spec(workload=workload), [H100])

    short = plan_for(typicalPromptTokens=512, typicalOutputTokens=256)
    long_ = plan_for(typicalPromptTokens=4096, typicalOutputTokens=4096)
    assert short.kv_context_tokens == 768
    assert long_.kv_context_tokens == 8192
    assert short.max_batch_by_memory == long_.max_batch_by_memory  # sized at 8192 either way
    at = min(short.batch_target, long_.batch_target)
    assert at >= 1
    assert short.predicted.plateau_tokens_per_second is not None
    assert long_.predicted.plateau_tokens_per_second is not None
    assert short.predicted.plateau_tokens_per_second > long_.predicted.plateau_tokens_per_second


def test_typical_lengths_default_from_the_context_window() -> None:
    w = spec(workload={"maxContextTokens": 4096}).workload
    assert (w.prompt_tokens, w.output_tokens) == (1024, 2048)
    w = spec(workload={"maxContextTokens": 4096, "typicalPromptTokens": 3000}).workload
    assert (w.prompt_tokens, w.output_tokens) == (3000, 1096)
    w = spec(workload={"maxContextTokens": 4096, "typicalOutputTokens": 4000}).workload
    assert (w.prompt_tokens, w.output_tokens) == (96, 4000)
    with pytest.raises(ValidationError, match="must not exceed maxContextTokens"):
        spec(
            workload={
                "maxContextTokens": 1024,
                "typicalPromptTokens": 1000,
                "typicalOutputTokens": 100,
            }
        )
    rules = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]["workload"]["x-kubernetes-validations"]
    assert any(
        "typicalPromptTokens" in r["rule"] and "maxContextTokens" in r["message"] for r in rules
    )


def test_memory_bound_uses_the_whole_node_and_says_so(shape_of) -> None:
    plan = plan_model(
        shape_of("llama-3.1-8b"), spec(workload={"mode": "batch", "maxContextTokens": 8192}), [L4]
    )
    assert plan.bound is Bound.MEMORY
    assert plan.gpus_per_replica == 1
    assert plan.knee_batch is not None
    assert plan.batch_target == plan.max_batch_by_memory < plan.knee_batch
    assert any("Memory-bound" in r for r in plan.reasons)


def test_infeasible_names_the_shortfall(shape_of) -> None:
    with pytest.raises(InfeasiblePlanError) as err:
        plan_model(shape_of("llama-3.1-70b"), spec(), [L4])
    message = str(err.value)
    assert "exceed" in message
    assert "GB" in message
    assert "nf4" in message
    assert err.value.options
    assert not any(o.feasible for o in err.value.options)


def test_slo_below_one_sequence_is_infeasible(shape_of) -> None:
    with pytest.raises(InfeasiblePlanError, match="over the 1 ms SLO"):
        plan_model(
            shape_of("llama-3.1-8b"), spec(workload={"slo": {"timePerOutputTokenMs": 1}}), [H100]
        )


def test_context_longer_than_the_model_is_refused(shape_of) -> None:
    with pytest.raises(InfeasiblePlanError, match="max_position_embeddings 4096"):
        plan_model(shape_of("phi-3-mini-4k"), spec(workload={"maxContextTokens": 8192}), [H100])


def test_options_rank_by_tokens_per_gpu_then_gpus(shape_of) -> None:
    plan = plan_model(
        shape_of("qwen2-7b"),
        spec(workload={"mode": "batch", "maxContextTokens": 2048}),
        [A100_40, H100, L4],
    )
    assert plan.pool == "h100"
    assert plan.gpus_per_replica == 1
    assert [o.chosen for o in plan.options].count(True) == 1
    assert {o.pool for o in plan.options} == {"a100", "h100", "l4"}
    best = max(o.tokens_per_second_per_gpu or 0 for o in plan.options if o.feasible)
    assert plan.predicted.tokens_per_second_per_gpu == best
    assert any("chosen over" in r for r in plan.reasons)


def test_no_example_plan_adds_a_gpu_without_adding_tokens_per_gpu(shape_of) -> None:
    """What `make plans` shows: a GPU count above the fewest feasible one has strictly more
    tokens/s per GPU than every smaller count."""
    pools = load_pools(EXAMPLES / "pools.yaml")
    checked = 0
    for manifest, model in EXAMPLE_MODELS.items():
        im = load_inference_model(EXAMPLES / manifest)
        plan = plan_model(shape_of(model), im.spec, pools)
        mine = [o for o in plan.options if o.pool == plan.pool and o.feasible]
        for o in mine:
            assert o.tokens_per_second_per_gpu is not None
            if o.gpus_per_replica < plan.gpus_per_replica:
                assert o.tokens_per_second_per_gpu < plan.predicted.tokens_per_second_per_gpu
            if o.gpus_per_replica > plan.gpus_per_replica:
                assert o.tokens_per_second_per_gpu <= plan.predicted.tokens_per_second_per_gpu
        checked += 1
    assert checked == len(EXAMPLE_MODELS) == 4


def test_accelerator_allow_list_and_cpu_only_when_asked(shape_of) -> None:
    tiny = shape_of("tiny-llama")
    ctx = {"maxContextTokens": 1024}
    assert (
        plan_model(tiny, spec(accelerators=["nvidia-l4"], workload=ctx), [H100, L4, CPU]).pool
        == "l4"
    )
    assert plan_model(tiny, spec(accelerators=["cpu"], workload=ctx), [H100, CPU]).pool == "cpu"
    assert plan_model(tiny, spec(workload=ctx), [CPU, L4]).pool == "l4"
    with pytest.raises(InfeasiblePlanError, match="no node pool matches"):
        plan_model(tiny, spec(workload=ctx), [CPU])


def test_gpu_counts_divide_the_heads(shape_of) -> None:
    qwen = shape_of("qwen2-7b")  # 28 heads, 4 KV heads
    assert gpu_counts(H100, qwen) == [1, 2, 4]
    assert gpu_counts(L4, qwen) == [1]


def test_t4_computes_in_fp16(shape_of) -> None:
    t4 = NodePool(name="t4", gpu_product="Tesla-T4", gpus_per_node=4)
    plan = plan_model(shape_of("tiny-llama"), spec(workload={"maxContextTokens": 512}), [t4])
    assert plan.compute_dtype == "float16"


def test_shared_gpus_are_planned_on_their_share(shape_of) -> None:
    with pytest.raises(ValidationError, match="sharedBy"):
        NodePool(name="s", gpu_product="NVIDIA-L4-SHARED", gpus_per_node=4)
    whole = NodePool(name="w", gpu_product="NVIDIA-L4", gpus_per_node=1)
    shared = NodePool(name="s", gpu_product="NVIDIA-L4-SHARED", gpus_per_node=4, shared_by=4)
    assert shared.accelerator().memory_bytes == whole.accelerator().memory_bytes // 4
    workload = spec(workload={"maxContextTokens": 512})
    plan = plan_model(shape_of("tiny-llama"), workload, [shared])
    alone = plan_model(shape_of("tiny-llama"), workload, [whole])
    assert any("shared by 4 replicas" in r for r in plan.reasons)
    assert plan.usable_memory_per_replica_bytes < alone.usable_memory_per_replica_bytes / 3


# ---- properties ---------------------------------------------------------------------------

MODELS = ["llama-3.1-8b", "qwen2-7b", "mistral-7b-v0.3", "gemma-2-9b", "phi-3-mini-4k"]
POOLS = [H100, A100_40, L4, H200]
contexts = st.integers(min_value=16, max_value=4096)
slos = st.none() | st.floats(min_value=5, max_value=500)
settings_ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _gpus(shape, s, pool) -> int | None:
    try:
        return plan_model(shape, s, [pool]).gpus_per_replica
    except InfeasiblePlanError:
        return None


def _too_slow(shape, s, pool) -> bool:
    """Infeasible because one sequence misses the SLO: no GPU count helps (speed, not memory)."""
    try:
        plan_model(shape, s, [pool])
    except InfeasiblePlanError as exc:
        return "SLO" in str(exc) and all("SLO" in o.note for o in exc.options)
    return False


def _spec(context: int, mode: str, slo: float | None, quant: str) -> InferenceModelSpec:
    workload: dict[str, object] = {"mode": mode, "maxContextTokens": context}
    if slo is not None and mode == "online":
        workload["slo"] = {"timePerOutputTokenMs": slo}
    return spec(workload=workload, quantization=quant)


@settings_
@given(
    model=st.sampled_from(MODELS),
    pool=st.sampled_from(POOLS),
    c1=contexts,
    c2=contexts,
    mode=st.sampled_from(["online", "batch"]),
    slo=slos,
    quant=st.sampled_from(["none", "int8", "nf4"]),
)
def test_more_context_never_needs_fewer_gpus(shape_of, model, pool, c1, c2, mode, slo, quant):
    short, long_ = sorted((c1, c2))
    shape = shape_of(model)
    n_short = _gpus(shape, _spec(short, mode, slo, quant), pool)
    n_long = _gpus(shape, _spec(long_, mode, slo, quant), pool)
    if n_long is not None:
        assert n_short is not None
        assert n_long >= n_short


@settings_
@given(
    model=st.sampled_from(MODELS),
    pool=st.sampled_from(POOLS),
    context=contexts,
    mode=st.sampled_from(["online", "batch"]),
    slo=slos,
)
def test_nf4_never_needs_more_gpus_than_bf16(shape_of, model, pool, context, mode, slo):
    shape = shape_of(model)
    bf16 = _gpus(shape, _spec(context, mode, slo, "none"), pool)
    nf4_spec = _spec(context, mode, slo, "nf4")
    nf4 = _gpus(shape, nf4_spec, pool)
    if bf16 is not None:
        # bitsandbytes is slower: an SLO that bf16 meets may be out of NF4's reach, on any count
        assert nf4 is not None or _too_slow(shape, nf4_spec, pool)
        if nf4 is not None:
            assert nf4 <= bf16


@settings_
@given(
    model=st.sampled_from(MODELS),
    pool=st.sampled_from(POOLS),
    context=contexts,
    mode=st.sampled_from(["online", "batch"]),
    slo=slos,
    quant=st.sampled_from(["none", "int8", "nf4"]),
)
def test_every_feasible_plan_fits_its_memory_budget(
    shape_of, model, pool, context, mode, slo, quant
):
    shape = shape_of(model)
    try:
        plan = plan_model(shape, _spec(context, mode, slo, quant), [pool])
    except InfeasiblePlanError:
        return
    acc = pool.accelerator()
    budget = mem.usable_memory_bytes(acc.memory_bytes, plan.gpus_per_replica)
    need = (
        plan.weight_bytes
        + plan.workspace_bytes
        + plan.batch_target * context * plan.kv_bytes_per_token
    )
    assert need <= budget
    assert plan.memory_per_replica_bytes <= plan.usable_memory_per_replica_bytes == budget
    assert plan.knee_batch is not None
    assert 1 <= plan.batch_target <= plan.knee_batch
    assert plan.batch_target <= plan.max_batch_by_memory
    if plan.slo_batch is not None:
        assert plan.batch_target <= plan.slo_batch
        assert slo is not None
        assert plan.predicted.time_per_output_token_ms <= slo + 0.01


def test_quantization_enum_covers_memory_formats() -> None:
    for q in Quantization:
        assert mem.bytes_per_weight(q, "bfloat16") > 0


# ---- ridgeline plan --batch N and --plot ---------------------------------------------------


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    from ridgeline.cli import main

    rc = main(["plan", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_plan_batch_prints_the_step_at_any_batch(capsys, skeleton_dir, shape_of) -> None:
    from ridgeline.planner.at_batch import predict_at_batch

    pools = load_pools(EXAMPLES / "pools.yaml")
    im = load_inference_model(EXAMPLES / "llama-8b.yaml")
    shape = shape_of("llama-3.1-8b")
    plan = plan_model(shape, im.spec, pools)
    pool = next(p for p in pools if p.name == plan.pool)
    at_target = predict_at_batch(shape, im.spec, plan, pool, plan.batch_target)
    assert round(at_target.step_seconds * 1000, 2) == plan.predicted.time_per_output_token_ms
    at_one = predict_at_batch(shape, im.spec, plan, pool, 1)
    big = predict_at_batch(shape, im.spec, plan, pool, 100_000)
    assert at_one.step_seconds < at_target.step_seconds < big.step_seconds
    assert at_one.tokens_per_second < at_target.tokens_per_second < big.tokens_per_second
    assert at_one.fits
    assert not big.fits

    args = [str(EXAMPLES / "llama-8b.yaml"), "--pools", str(EXAMPLES / "pools.yaml")]
    args += ["--model-uri", str(skeleton_dir("llama-3.1-8b"))]
    rc, out, _ = _cli(capsys, *args, "--batch", "1")
    assert rc == 0
    assert f"At batch 1 on 1 x {plan.gpu_product}: {at_one.step_seconds * 1000:.1f} ms" in out
    assert f"{at_one.tokens_per_second:.0f} tokens/s per replica" in out
    rc, out, err = _cli(capsys, *args, "--batch", "100000", "-o", "json")
    assert rc == 0
    assert json.loads(out)["batchTarget"] == plan.batch_target  # stdout stays status.plan
    assert "does NOT fit" in err
    with pytest.raises(SystemExit):
        _cli(capsys, *args, "--batch", "0")


def test_plot_draws_measured_points_where_a_sweep_exists(
    capsys, skeleton_dir, shape_of, tmp_path
) -> None:
    from ridgeline.planner.measurements import measured_for
    from ridgeline.planner.step_model import Engine

    pools = tmp_path / "pools.yaml"
    pools.write_text("- {name: a100, gpuProduct: NVIDIA-A100-SXM4-80GB, gpusPerNode: 8}\n")
    model = tmp_path / "model.yaml"
    model.write_text(
        "apiVersion: ridgeline.dev/v1alpha1\nkind: InferenceModel\n"
        "metadata: {name: llama-2-13b}\n"
        "spec: {model: {uri: 's3://models/llama-2-13b'}, workload: {maxContextTokens: 1024}}\n"
    )
    shape = shape_of("llama-2-13b")
    assert measured_for(shape.num_params, "A100-80GB-SXM4", Engine.TRANSFORMERS, Quantization.NONE)
    assert not measured_for(shape.num_params, "H100-SXM5", Engine.TRANSFORMERS, Quantization.NONE)
    png = tmp_path / "roofline.png"
    rc, _, err = _cli(
        capsys,
        str(model),
        "--pools",
        str(pools),
        "--model-uri",
        str(skeleton_dir("llama-2-13b")),
        "--plot",
        str(png),
        "--batch",
        "8",
    )
    assert rc == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
