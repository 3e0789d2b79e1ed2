"""Write safetensors checkpoints from a Hugging Face config without downloading anything.

``write_skeleton`` writes zero-filled, sparse files: real safetensors that any reader opens,
sized like the real model but taking no disk space. Enough for the shape reader and planner
(and for loading, if zero weights will do).
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4}
# TinyLlama-1.1B's shape: what the GPU benchmarks load with random weights, and the shape the
# planner's own-engine measurements (tests/unit/test_published_numbers.py) were taken on.
LLAMA_1B_CONFIG: dict[str, Any] = {
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
# The example CPU model's shape (examples/models/tiny-llama, 3.4M parameters): what the CPU
# step-model benchmark (tests/bench/bench_cpu_steps.py) loads with random weights, at several
# depths, and the shape of the planner's own CPU measurements.
TINY_LLAMA_CONFIG: dict[str, Any] = {
    **LLAMA_1B_CONFIG,
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "vocab_size": 2048,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}
TensorSpec = tuple[str, str, list[int]]


def tensor_specs(
    config: dict[str, Any], dtype: str = "BF16"
) -> Iterator[tuple[str, str, list[int]]]:
    """Tensor names and shapes of a Llama-family checkpoint, as the Hugging Face checkpoints
    name them (Llama, Mistral, Qwen2 with attention biases, Gemma-2 with its extra norms, Phi-3
    with fused projections, Mixtral with its experts)."""
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    head_dim = config.get("head_dim") or hidden // heads
    inter = config["intermediate_size"]
    vocab = config["vocab_size"]
    model_type = config.get("model_type", "llama")
    fused = model_type == "phi3"
    biases = model_type == "qwen2" or bool(config.get("attention_bias"))
    yield "model.embed_tokens.weight", dtype, [vocab, hidden]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}"
        yield f"{p}.input_layernorm.weight", dtype, [hidden]
        yield f"{p}.post_attention_layernorm.weight", dtype, [hidden]
        if model_type == "gemma2":
            yield f"{p}.pre_feedforward_layernorm.weight", dtype, [hidden]
            yield f"{p}.post_feedforward_layernorm.weight", dtype, [hidden]
        if fused:
            yield (
                f"{p}.self_attn.qkv_proj.weight",
                dtype,
                [(heads + 2 * kv_heads) * head_dim, hidden],
            )
        else:
            for proj, n in (("q", heads), ("k", kv_heads), ("v", kv_heads)):
                yield f"{p}.self_attn.{proj}_proj.weight", dtype, [n * head_dim, hidden]
                if biases:
                    yield f"{p}.self_attn.{proj}_proj.bias", dtype, [n * head_dim]
        yield f"{p}.self_attn.o_proj.weight", dtype, [hidden, heads * head_dim]
        experts = config.get("num_local_experts", 0)
        if experts:
            yield f"{p}.block_sparse_moe.gate.weight", dtype, [experts, hidden]
            for e in range(experts):
                q = f"{p}.block_sparse_moe.experts.{e}"
                yield f"{q}.w1.weight", dtype, [inter, hidden]
                yield f"{q}.w2.weight", dtype, [hidden, inter]
                yield f"{q}.w3.weight", dtype, [inter, hidden]
        elif fused:
            yield f"{p}.mlp.gate_up_proj.weight", dtype, [2 * inter, hidden]
        else:
            yield f"{p}.mlp.gate_proj.weight", dtype, [inter, hidden]
            yield f"{p}.mlp.up_proj.weight", dtype, [inter, hidden]
        if not experts:
            yield f"{p}.mlp.down_proj.weight", dtype, [hidden, inter]
    yield "model.norm.weight", dtype, [hidden]
    if not config.get("tie_word_embeddings", False):
        yield "lm_head.weight", dtype, [vocab, hidden]


def _nbytes(dtype: str, shape: list[int]) -> int:
    return math.prod(shape) * DTYPE_BYTES[dtype]


def _write_sparse_file(path: Path, tensors: list[TensorSpec]) -> None:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in tensors:
        size = _nbytes(dtype, shape)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        fh.truncate(8 + len(raw) + offset)


def write_skeleton(
    config: dict[str, Any], out_dir: Path, shards: int = 1, dtype: str = "BF16"
) -> Path:
    """A zero-filled sparse checkpoint of the config's architecture; sharded with an index when
    ``shards`` > 1. Returns ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    specs = list(tensor_specs(config, dtype))
    if shards == 1:
        _write_sparse_file(out_dir / "model.safetensors", specs)
        return out_dir
    total = sum(_nbytes(d, s) for _, d, s in specs)
    per_shard = math.ceil(total / shards)
    groups: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in specs:
        if size >= per_shard and len(groups) < shards:
            groups.append([])
            size = 0
        groups[-1].append(spec)
        size += _nbytes(spec[1], spec[2])
    weight_map = {}
    for i, group in enumerate(groups, start=1):
        name = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        _write_sparse_file(out_dir / name, group)
        weight_map.update({t[0]: name for t in group})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return out_dir


def disk_usage_bytes(path: Path) -> int:
    return sum(os.stat(p).st_blocks * 512 for p in path.rglob("*") if p.is_file())
