"""How many times a decode step moves the KV cache: this engine against transformers' own
``generate`` (a ``DynamicCache``, which concatenates every layer's cache each step), on this
machine's CPU.

The planner's step model charges ``kv_passes`` x the KV bytes per step, 3 for transformers'
stack (the cache read and rewritten one token longer, then attention reads it), fitted to
published measurements of ``generate``. This engine writes each step's column in place and
attention reads the cache once. The figure that tells: the growth of the decode step with the
KV bytes (ms per MB read once), a batch of 16 at four contexts, the same model and weights for
both. Writes docs/benchmarks.md (section "KV passes per step, CPU"; where CUDA is, also "KV
passes per step, GPU": a ~1B Llama in bf16, batch 32, contexts of 1k-8k, which is what the
GPU rows of the step model need)."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from bench_gpu import random_checkpoint
from bench_report import write_section

from ridgeline.api import Quantization
from ridgeline_dev.checkpoints import LLAMA_1B_CONFIG
from ridgeline_serving.engine import GenerationRequest, StepStats
from ridgeline_serving.engine.transformers_engine import TransformersEngine

NEW_TOKENS = 32
REPEATS = 3


@dataclass(frozen=True)
class Target:
    title: str
    what: str
    config: dict[str, Any]
    dtype: str
    gpus: int
    batch: int
    contexts: tuple[int, ...]

    def kv_megabytes(self, context: int) -> float:
        layers, heads = self.config["num_hidden_layers"], self.config["num_key_value_heads"]
        head_dim = self.config["hidden_size"] // self.config["num_attention_heads"]
        width = 4 if self.dtype == "float32" else 2
        return self.batch * context * layers * 2 * heads * head_dim * width / 1e6


CPU = Target(
    "KV passes per step, CPU",
    # KV-heavy on purpose (8 KV heads, 4 layers: 8 KiB a token in float32), small weights
    "a random-weight Llama (hidden 256, 4 layers, 8 KV heads: KV-heavy, small weights), "
    "float32, one intra-op thread",
    {
        "hidden_size": 256,
        "intermediate_size": 688,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        "vocab_size": 2048,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": True,
    },
    "float32",
    0,
    16,
    (256, 1024, 2048, 3072),
)
GPU = Target(
    "KV passes per step, GPU",
    "a random-weight Llama of TinyLlama-1.1B's shape, bfloat16, this engine decoding under "
    "CUDA graphs as a GPU replica does",
    {**LLAMA_1B_CONFIG, "max_position_embeddings": 8192 + NEW_TOKENS},
    "bfloat16",
    1,
    32,
    (1024, 2048, 4096, 8192),
)


def engine_step_s(
    engine: TransformersEngine, steps: list[StepStats], context: int, batch: int
) -> float:
    """Median decode step while all rows decode (the last of ``REPEATS`` passes' medians)."""
    reqs = [GenerationRequest([5 + i] * context, NEW_TOKENS, temperature=0) for i in range(batch)]
    medians = []
    for _ in range(REPEATS):
        steps.clear()
        engine.generate(reqs)
        full = [s.seconds for s in steps if s.decode_tokens == batch and s.prefill_tokens == 0]
        medians.append(statistics.median(full))
    return statistics.median(medians)


def generate_step_s(model: torch.nn.Module, context: int, batch: int) -> float:
    """transformers' ``generate``: (time for NEW_TOKENS + 1 tokens - time for 1) / NEW_TOKENS."""
    device = next(model.parameters()).device
    ids = torch.tensor([[5 + i] * context for i in range(batch)], device=device)

    def run(new: int) -> float:
        began = time.perf_counter()
        with torch.inference_mode():
            model.generate(  # type: ignore[operator]
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new,
                do_sample=False,
                eos_token_id=-1,
                pad_token_id=0,
            )
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - began

    run(2)
    return statistics.median((run(NEW_TOKENS + 1) - run(1)) / NEW_TOKENS for _ in range(REPEATS))


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares ms per MB."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)


def measure(target: Target) -> str:
    rows, ours, theirs = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = random_checkpoint(target.config, Path(tmp) / "m")
        steps: list[StepStats] = []
        engine = TransformersEngine(
            model_dir, "kv", Quantization.NONE, target.dtype, target.gpus,
            max(target.contexts) + NEW_TOKENS, max_batch=target.batch, on_step=steps.append,
        )  # fmt: skip
        engine.scheduler.eos_ids = set()  # random weights: every request runs to its length
        try:
            for context in target.contexts:
                mb = target.kv_megabytes(context)
                a = engine_step_s(engine, steps, context, target.batch)
                b = generate_step_s(engine.model, context, target.batch)
                ours.append((mb, a * 1e3))
                theirs.append((mb, b * 1e3))
                rows.append(f"| {context} | {mb:.0f} | {a * 1e3:.1f} | {b * 1e3:.1f} |")
                print(rows[-1], flush=True)
        finally:
            engine.close()
    s_ours, s_theirs = slope(ours), slope(theirs)
    return "\n".join(
        [
            f"Decode step against the KV bytes, batch {target.batch}, {target.what}, "
            f"{NEW_TOKENS} new tokens, each figure the median of {REPEATS} runs:",
            "",
            "| context (tokens) | KV (MB) | this engine (ms per step) | transformers `generate`, "
            "DynamicCache (ms per step) |",
            "|---|---|---|---|",
            *rows,
            "",
            f"Growth with the KV bytes (least squares): this engine {s_ours:.4f} ms per MB (as if "
            f"it read the KV once at {1 / s_ours:.1f} GB/s), `generate` {s_theirs:.4f} ms per MB "
            f"({s_theirs / s_ours:.1f}x). The planner's step model charges 3 passes over the KV "
            "per step, fitted to published measurements of `generate`; this engine writes each "
            "step's column in place and attention reads the cache once. The GPU rows keep 3 "
            "passes until the GPU section here measures this engine at long contexts.",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpu-only", action="store_true", help="the GPU section alone")
    args = parser.parse_args()
    if not args.gpu_only:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        write_section(CPU.title, measure(CPU))
        torch.set_num_threads(threads)
    if torch.cuda.is_available():
        write_section(GPU.title, measure(GPU), torch.cuda.get_device_name(0))
    else:
        print("bench_kv_passes: no CUDA device here; the GPU section needs one")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
