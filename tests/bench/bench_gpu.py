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
import tempfile
import time
from pathlib import Path

from bench_report import write_section

LLAMA_1B = {  # TinyLlama-1.1B's shape
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
SMOKE = {
    **LLAMA_1B,
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


def sweep(
    model_dir: Path, quantization: str, dtype: str, gpus: int, batches: list[int]
) -> dict[int, float]:
    import torch

    from ridgeline.api import Quantization
    from ridgeline_serving.engine import GenerationRequest
    from ridgeline_serving.engine.transformers_engine import TransformersEngine

    engine = TransformersEngine(
        model_dir, "bench", Quantization(quantization), dtype, gpus, 4096, max_batch=max(batches)
    )
    engine.scheduler.eos_ids = set()  # random weights: never stop early
    out = {}
    for batch in batches:
        reqs = [
            GenerationRequest([5 + (i % 100)] * PROMPT_TOKENS, NEW_TOKENS, temperature=0)
            for i in range(batch)
        ]
        try:
            engine.generate(reqs[:1])
            if gpus:
                torch.cuda.synchronize()
            start = time.perf_counter()
            engine.generate(reqs)
            if gpus:
                torch.cuda.synchronize()
            out[batch] = batch * NEW_TOKENS / (time.perf_counter() - start)
        except RuntimeError as exc:  # the engine reports a failed step (out of memory) so
            if "OutOfMemoryError" not in str(exc):
                raise
            break
        print(f"  {quantization:5} batch {batch:4}: {out[batch]:9.0f} tokens/s", flush=True)
    engine.close()
    del engine
    if gpus:
        torch.cuda.empty_cache()
    return out


def knee(curve: dict[int, float]) -> tuple[int, float]:
    plateau = max(curve.values())
    return min(b for b, v in curve.items() if v >= 0.9 * plateau), plateau


def predicted(
    model_dir: Path, product: str, memory_mib: int, quantization: str, batch: int
) -> tuple[int, float]:
    from ridgeline.api import InferenceModelSpec
    from ridgeline.planner import NodePool
    from ridgeline.planner.sizing import size
    from ridgeline.planner.throughput import StepTerms
    from ridgeline.shape import read_model_shape

    shape = read_model_shape(str(model_dir))
    if product == "cpu":
        pool = NodePool(name="bench", gpu_product="cpu", gpus_per_node=0)
    else:
        pool = NodePool(
            name="bench", gpu_product=product, gpus_per_node=1, gpu_memory_mib=memory_mib
        )
    spec = InferenceModelSpec.model_validate(
        {"model": {"uri": "file:///x"}, "quantization": quantization}
    )
    s = size(shape, spec, pool)
    # the sweep decodes a static batch: every row at the prompt plus half the output, on average
    terms = StepTerms.of(
        s.row,
        shape.num_params,
        s.weight_bytes,
        PROMPT_TOKENS + NEW_TOKENS / 2,
        s.kv_bytes_per_token,
        s.acc.dense_flops_per_s,
        s.acc.memory_bandwidth_bytes_per_s,
    )
    return round(s.critical_batch), terms.tokens_per_second(batch)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU")
    args = parser.parse_args()
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; run `make bench` on a GPU machine for this section")
        return 0
    gpus = 0 if args.smoke else 1
    config = SMOKE if args.smoke else LLAMA_1B
    batches = [1, 2, 4] if args.smoke else [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    dtype = "float32" if args.smoke else "bfloat16"
    product = "cpu" if args.smoke else torch.cuda.get_device_name(0).replace(" ", "-")
    mem = 0 if args.smoke else torch.cuda.get_device_properties(0).total_memory // 2**20
    quants = ["none", "nf4"] if args.smoke else ["none", "int8", "nf4"]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = random_checkpoint(config, Path(tmp) / "m")
        rows = [
            "| format | knee (90% of plateau) | plateau tokens/s | planner B* | planner tokens/s at the knee | measured / predicted |",
            "|---|---|---|---|---|---|",
        ]
        curves = {}
        for q in quants:
            curve = sweep(model_dir, q, dtype, gpus, batches)
            curves[q] = curve
            k, plateau = knee(curve)
            b_star, pred = predicted(model_dir, product, mem, q, k)
            rows.append(
                f"| {q} | {k} | {plateau:.0f} | {b_star} | {pred:.0f} | {curve[k] / pred:.2f} |"
            )
    text = "\n".join(
        [
            f"Random-weight Llama ({json.dumps({k: config[k] for k in ('hidden_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads')})}), "
            f"{PROMPT_TOKENS}-token prompts, {NEW_TOKENS} new tokens, on {product}:",
            "",
            *rows,
            "",
            "Curves (tokens/s by batch): "
            + json.dumps({q: {b: round(v) for b, v in c.items()} for q, c in curves.items()}),
        ]
    )
    print(text)
    if not args.smoke:
        write_section("Serving, GPU", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
