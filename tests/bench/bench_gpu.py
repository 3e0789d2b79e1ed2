"""On an NVIDIA GPU: tokens/s against batch size for a random-weight Llama of about 1B
parameters in bf16, int8 and nf4 with the serving engine (transformers + bitsandbytes), each
curve's knee and plateau beside what the planner predicts for that GPU. All requests of a batch
are submitted at once to the continuous-batching engine, so they prefill together and decode
together, which is the planner's steady state. Writes
docs/benchmarks.md (section "Serving, GPU"). Without CUDA it says so and exits 0;
``--smoke`` runs the same code on a tiny model on the CPU (what CI can check)."""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench_report import write_section

from ridgeline.planner.sizing import Sizing
from ridgeline.planner.step_model import StepModel
from ridgeline.planner.throughput import StepTerms
from ridgeline.shape import ModelShape
from ridgeline_dev.checkpoints import LLAMA_1B_CONFIG

SMOKE = {
    **LLAMA_1B_CONFIG,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
}
PROMPT_TOKENS = 128
NEW_TOKENS = 64


def random_checkpoint(config: dict, out: Path) -> Path:  # type: ignore[type-arg]
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    cfg = LlamaConfig(
        **{
            k: v
            for k, v in config.items()
            if k not in ("architectures", "model_type", "torch_dtype")
        }
    )
    model = LlamaForCausalLM(cfg).to(dtype=torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    vocab = {f"t{i}": i for i in range(config["vocab_size"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="t1", pad_token="t0").save_pretrained(
        out
    )
    return out


@dataclass(frozen=True)
class Point:
    tokens_per_s: float  # end to end: prefill ramp, decode and drain of the whole batch
    decode_step_s: float  # median decode step while every row of the batch decodes


def sweep(
    model_dir: Path, quantization: str, dtype: str, gpus: int, batches: list[int]
) -> dict[int, Point]:
    import torch

    from ridgeline.api import Quantization
    from ridgeline_serving.engine import GenerationRequest, StepStats
    from ridgeline_serving.engine.transformers_engine import TransformersEngine

    steps: list[StepStats] = []
    engine = TransformersEngine(
        model_dir,
        "bench",
        Quantization(quantization),
        dtype,
        gpus,
        4096,
        max_batch=max(batches),
        on_step=steps.append,
    )
    engine.scheduler.eos_ids = set()  # random weights: never stop early
    out = {}
    for batch in batches:
        reqs = [
            GenerationRequest([5 + (i % 100)] * PROMPT_TOKENS, NEW_TOKENS, temperature=0)
            for i in range(batch)
        ]
        try:
            # The first pass at a batch size is slow (kernel selection and allocator growth for
            # its shapes, ~50 ms a step on an H100); a replica pays it once, so it is not timed.
            engine.generate(reqs)
            if gpus:
                torch.cuda.synchronize()
            steps.clear()
            start = time.perf_counter()
            engine.generate(reqs)
            if gpus:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        except RuntimeError as exc:  # the engine reports a failed step (out of memory) so
            if "OutOfMemoryError" not in str(exc):
                raise
            break
        full = [s.seconds for s in steps if s.decode_tokens == batch and s.prefill_tokens == 0]
        out[batch] = Point(batch * NEW_TOKENS / seconds, statistics.median(full))
        print(
            f"  {quantization:5} batch {batch:4}: {out[batch].tokens_per_s:9.0f} tokens/s, "
            f"decode step {out[batch].decode_step_s * 1e3:7.2f} ms ({len(full)} full steps)",
            flush=True,
        )
    engine.close()
    del engine
    if gpus:
        torch.cuda.empty_cache()
    return out


def knee(curve: dict[int, float]) -> tuple[int, float]:
    plateau = max(curve.values())
    return min(b for b, v in curve.items() if v >= 0.9 * plateau), plateau


def planner_terms(
    model_dir: Path, product: str, memory_mib: int, quantization: str
) -> tuple[int, StepTerms]:
    """The planner's B* and its step model for this model on this accelerator."""
    s, shape = bench_sizing(model_dir, product, memory_mib, quantization)
    return round(s.critical_batch), sweep_terms(s, shape)


def bench_sizing(
    model_dir: Path, product: str, memory_mib: int, quantization: str
) -> tuple[Sizing, ModelShape]:
    """The planner's sizing of this model on one GPU of ``product``, or (``cpu``) on a CPU pool
    that is this machine, as `ridgeline serve` plans it."""
    from ridgeline.api import InferenceModelSpec
    from ridgeline.planner import NodePool
    from ridgeline.planner.sizing import size
    from ridgeline.shape.reader import read_model_shape

    shape = read_model_shape(str(model_dir))
    if product == "cpu":
        from ridgeline_serving.local import local_cpu_pool

        pool = local_cpu_pool()
    else:
        pool = NodePool(
            name="bench", gpu_product=product, gpus_per_node=1, gpu_memory_mib=memory_mib
        )
    spec = InferenceModelSpec.model_validate(
        {"model": {"uri": "file:///x"}, "quantization": quantization}
    )
    return size(shape, spec, pool), shape


def sweep_terms(s: Sizing, shape: ModelShape, row: StepModel | None = None) -> StepTerms:
    """The step model (``row``, else the plan's) at a sweep's context: a static batch, every
    row at the prompt plus half the output, on average."""
    return StepTerms.of(
        row or s.row,
        shape.num_layers,
        shape.num_params,
        s.weight_bytes,
        PROMPT_TOKENS + NEW_TOKENS / 2,
        s.kv_bytes_per_token,
        s.acc.dense_flops_per_s,
        s.acc.memory_bandwidth_bytes_per_s,
    )


def format_rows(q: str, curve: dict[int, Point], b_star: int, terms: StepTerms) -> list[str]:
    decode = {b: b / p.decode_step_s for b, p in curve.items()}
    k, plateau = knee(decode)
    rows = [
        f"**{q}**: measured knee {k}, plateau {plateau:.0f} tokens/s (decode); planner B* "
        f"{b_star}, knee {terms.knee_batch()}, plateau {terms.plateau_tokens_per_second:.0f} "
        "tokens/s.",
        "",
        "| batch | decode step, measured (ms) | predicted (ms) | measured / predicted | "
        "decode tokens/s | end-to-end tokens/s |",
        "|---|---|---|---|---|---|",
    ]
    for b, p in curve.items():
        pred = terms.step_seconds(b)
        rows.append(
            f"| {b} | {p.decode_step_s * 1e3:.2f} | {pred * 1e3:.2f} | "
            f"{p.decode_step_s / pred:.2f} | {decode[b]:.0f} | {p.tokens_per_s:.0f} |"
        )
    return [*rows, ""]


def depth_check(
    config: dict,  # type: ignore[type-arg]
    tmp: Path,
    dtype: str,
    gpus: int,
    product: str,
    mem: int,
    batches: list[int],
) -> list[str]:
    """The step model charges host time per layer: the same model at half the depth should
    take about half the host time. bf16, small batches, where the host time is the step."""
    from ridgeline.api import Quantization
    from ridgeline.planner.step_model import Engine, step_model

    fixed_s = step_model(Engine.TRANSFORMERS, Quantization.NONE, on_cpu=False).overhead_s
    rows = [
        "Host time per layer (bf16): the decode step minus the planner's device terms and fixed "
        "overhead, over the layers.",
        "",
        "| layers | batch | decode step (ms) | host ms per layer |",
        "|---|---|---|---|",
    ]
    for layers in (config["num_hidden_layers"], config["num_hidden_layers"] // 2):
        model_dir = random_checkpoint({**config, "num_hidden_layers": layers}, tmp / f"d{layers}")
        curve = sweep(model_dir, "none", dtype, gpus, batches)
        _, terms = planner_terms(model_dir, product, mem, "none")
        for b, p in curve.items():
            device_s = terms.step_seconds(b) - terms.overhead_s
            per_layer_s = (p.decode_step_s - device_s - fixed_s) / layers
            rows.append(
                f"| {layers} | {b} | {p.decode_step_s * 1e3:.2f} | {per_layer_s * 1e3:.3f} |"
            )
    return [*rows, ""]


@dataclass(frozen=True)
class Setup:
    """Where a GPU benchmark runs: the GPU, or (``--smoke``) a tiny model on the CPU."""

    gpus: int
    config: dict  # type: ignore[type-arg]
    dtype: str
    product: str  # the GPU's name, or "cpu"


def setup(smoke: bool, script: str) -> Setup | None:
    """None (having said why) when there is no GPU and this is not a smoke run."""
    import torch

    if smoke:
        return Setup(0, SMOKE, "float32", "cpu")
    if not torch.cuda.is_available():
        print(f"{script}: no CUDA device here; run `make bench` on a GPU machine for this section")
        return None
    return Setup(1, LLAMA_1B_CONFIG, "bfloat16", torch.cuda.get_device_name(0))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU")
    parser.add_argument("--depth-only", action="store_true", help="print the depth check only")
    args = parser.parse_args()
    import torch

    where = setup(args.smoke, "bench_gpu")
    if where is None:
        return 0
    gpus, config, dtype = where.gpus, where.config, where.dtype
    product = where.product.replace(" ", "-")
    batches = [1, 2, 4] if args.smoke else [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    mem = 0 if args.smoke else torch.cuda.get_device_properties(0).total_memory // 2**20
    quants = ["none", "nf4"] if args.smoke else ["none", "int8", "nf4"]
    shape = json.dumps(
        {
            k: config[k]
            for k in (
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
            )
        }
    )
    lines = [
        f"Random-weight Llama ({shape}), {PROMPT_TOKENS}-token prompts, {NEW_TOKENS} new tokens, "
        f"greedy, on {product} (torch {torch.__version__}). Each batch is sent once untimed "
        "(a replica's first pass at a batch size selects kernels) and once timed; the decode "
        "step is the median step while every row of the batch decodes, which is what the "
        "planner's step model predicts.",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = random_checkpoint(config, Path(tmp) / "m")
        for q in [] if args.depth_only else quants:
            curve = sweep(model_dir, q, dtype, gpus, batches)
            b_star, terms = planner_terms(model_dir, product, mem, q)
            lines += format_rows(q, curve, b_star, terms)
        lines += depth_check(config, Path(tmp), dtype, gpus, product, mem, batches[:3])
    text = "\n".join(lines)
    print(text)
    if not args.smoke and not args.depth_only:
        write_section("Serving, GPU", text, accelerator=torch.cuda.get_device_name(0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
