"""A tiny chat model made on the spot: a byte-level BPE tokenizer trained on a small corpus,
random weights in a real architecture (Llama), a chat template. No hub, no download."""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
WORDS = [
    "the",
    "a",
    "model",
    "serves",
    "tokens",
    "batch",
    "ridge",
    "roofline",
    "memory",
    "bandwidth",
    "gpu",
    "cluster",
    "kube",
    "ray",
    "serve",
    "replica",
    "scale",
    "zero",
    "weights",
    "cache",
    "quantization",
    "nf4",
    "int8",
    "bfloat16",
    "latency",
    "throughput",
    "request",
    "answer",
    "question",
    "hello",
    "world",
    "ridgeline",
    "plan",
    "node",
    "pool",
    "driver",
    "cuda",
    "image",
]


def corpus(lines: int = 2000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 16))) + "." for _ in range(lines)
    ]


def write_tokenizer(out: Path, vocab_size: int = 512, texts: Iterable[str] | None = None) -> Any:
    """Train a byte-level BPE tokenizer on ``texts`` (default: the random word corpus) and save
    it, with the chat template, under ``out``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus() if texts is None else texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def write_tiny_model(
    out: Path,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    seed: int = 0,
    shards: int = 1,
) -> Path:
    """Tokenizer + random Llama weights (safetensors) + config under ``out``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    tok = write_tokenizer(out)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2 + 8,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model = model.to(dtype=torch.bfloat16)  # type: ignore[call-arg]
    size = sum(p.numel() * 2 for p in model.parameters())
    max_shard = f"{max(1, size // shards // 1000 + 1)}KB" if shards > 1 else "10GB"
    model.save_pretrained(out, safe_serialization=True, max_shard_size=max_shard)
    (out / "generation_config.json").unlink(missing_ok=True)
    return out


def upload_dir(
    root: Path, bucket: str, prefix: str, endpoint: str, access_key: str, secret_key: str
) -> str:
    """Put every file under ``root`` into ``s3://bucket/prefix``; returns the URI."""
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
    )
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=bucket)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(root).as_posix()}")
    return f"s3://{bucket}/{prefix}"


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="ridgeline-dev tiny-model")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    write_tiny_model(args.out)
    print(json.dumps({"path": str(args.out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
