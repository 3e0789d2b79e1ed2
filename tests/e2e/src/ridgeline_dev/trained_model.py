"""A tiny chat model that answers in words: trained on the spot, on the CPU, on the text the
project ships (README.md and docs/*.md), in well under a minute. No hub, no download.

The tokenizer is trained as for the random tiny model (``tiny_model.write_tokenizer``), on the
same text. Each training example is one chat turn: a section heading as the user's question,
the section's prose as the assistant's answer, so that what the served model sees after the
chat template is what it was trained to continue.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ridgeline_dev.tiny_model import write_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[4]
MODEL_CARD = "ridgeline-demo.json"
_MARKUP = re.compile(r"[`*_#>]|\\")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")


@dataclass(frozen=True)
class TrainingReport:
    """What was trained, for the demo's output (also written next to the weights)."""

    params: int
    steps: int
    seconds: float
    first_loss: float
    final_loss: float
    examples: int
    sources: list[str]

    def summary(self) -> str:
        return (
            f"a tiny Llama ({self.params / 1e6:.1f} M parameters) trained for "
            f"{self.seconds:.0f} s on the CPU ({self.steps} steps, loss {self.first_loss:.2f} -> "
            f"{self.final_loss:.2f}) on the project's own docs ({', '.join(self.sources)})"
        )


def doc_sources(root: Path = REPO_ROOT) -> list[Path]:
    """The prose the project ships: the README and docs/, less what is generated (the CRD
    reference, and the benchmark figures that every `make bench` rewrites: a demo trained on
    them answered in numbers, and changed its answer with each run's figures)."""
    generated = {"crd-reference.md", "benchmarks.md"}
    docs = sorted(p for p in (root / "docs").glob("*.md") if p.name not in generated)
    return [root / "README.md", *docs]


def _plain(text: str) -> str:
    return " ".join(_MARKUP.sub("", _LINK.sub(r"\1", text)).split())


def _sections(title: str, text: str) -> Iterator[tuple[str, list[str]]]:
    """(heading, prose lines) per markdown section; code blocks and tables left out."""
    heading, in_code, prose = title, False, list[str]()
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif in_code or line.lstrip().startswith("|"):
            continue
        elif line.startswith("#"):
            yield heading, prose
            heading, prose = _plain(line), []
        else:
            prose.append(line)
    yield heading, prose


def chat_examples(paths: list[Path]) -> list[tuple[str, str]]:
    """(question, answer) pairs: a section heading and the prose under it. Whole sections, not
    single paragraphs, as answers, so that the model learns long answers and does not stop
    after a few words."""
    pairs = []
    for path in paths:
        for heading, prose in _sections(path.stem, path.read_text()):
            answer = _plain(" ".join(prose))
            if len(answer.split()) >= 6:
                pairs.append((heading, answer))
    return pairs


def training_text(pairs: list[tuple[str, str]]) -> str:
    return "\n".join(f"{q}\n{a}" for q, a in pairs)


def _blocks(
    ids: list[int], learned: list[bool], block: int, batch: int, seed: int
) -> Iterator[tuple[Any, Any]]:
    """Random windows of the token stream: (input ids, labels), the labels -100 (no loss)
    where the token is not one the model is to learn to write."""
    import torch

    data = torch.tensor(ids, dtype=torch.long)
    labels = torch.where(torch.tensor(learned), data, torch.full_like(data, -100))
    gen = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, len(data) - block - 1, (batch,), generator=gen).tolist()
        yield (
            torch.stack([data[s : s + block + 1] for s in starts]),
            torch.stack([labels[s : s + block + 1] for s in starts]),
        )


def write_trained_model(
    out: Path,
    steps: int = 240,
    max_seconds: float = 55.0,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    vocab_size: int = 2048,
    block: int = 128,
    batch: int = 8,
    seed: int = 0,
    root: Path = REPO_ROOT,
) -> TrainingReport:
    """Train a tiny Llama on the project's docs for ``steps`` steps and save tokenizer, config
    and safetensors weights under ``out``. A fixed step count, so that the weights (and a greedy
    answer) are the same on every machine: ~30 s on a loaded 2-core machine; ``max_seconds``
    stops it early on a very slow one."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    sources = doc_sources(root)
    pairs = chat_examples(sources)
    tok = write_tokenizer(out, vocab_size=vocab_size, texts=[training_text(pairs)])
    ids: list[int] = []
    learned: list[bool] = []  # the answers' tokens: the loss is on them only
    for question, answer in pairs:
        # The answer is left open (no end-of-turn token): a model this small learns to stop
        # after a word or two where some sections are short; open answers run to max_tokens.
        # The question's turn is input only: trained on it, the model learned that a short
        # heading-like phrase ends with the end-of-turn token, and stopped its answer there.
        prompt = [{"role": "user", "content": question}]
        text = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        asked = tok(text, add_special_tokens=False)["input_ids"]
        said = tok(answer + "\n", add_special_tokens=False)["input_ids"]
        ids += asked + said
        learned += [False] * len(asked) + [True] * len(said)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.train()
    # One thread: on a shared 2-core machine two OpenMP threads wait on each other at every
    # barrier, and a step takes ten times as long (measured: 1.2 s against 0.1 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    warmup = 30
    start = time.monotonic()
    losses: list[float] = []
    for step, (xy, labels) in enumerate(_blocks(ids, learned, block, batch, seed)):
        if step >= steps or time.monotonic() - start >= max_seconds:
            break
        # Linear warm-up, then cosine decay to a tenth.
        frac = step / steps
        lr_scale = min(1.0, (step + 1) / warmup) * (
            0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))
        )
        for group in opt.param_groups:
            group["lr"] = 3e-3 * lr_scale
        loss = model(input_ids=xy, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    took = time.monotonic() - start
    torch.set_num_threads(threads)
    model.eval()  # type: ignore[no-untyped-call]
    model = model.to(dtype=torch.bfloat16)  # type: ignore[call-arg]
    model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)
    tail = losses[-20:]
    report = TrainingReport(
        params=sum(p.numel() for p in model.parameters()),
        steps=len(losses),
        seconds=took,
        first_loss=losses[0],
        final_loss=sum(tail) / len(tail),
        examples=len(pairs),
        sources=[p.relative_to(root).as_posix() for p in sources],
    )
    (out / MODEL_CARD).write_text(json.dumps(asdict(report), indent=2))
    return report


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="ridgeline-dev trained-model")
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=240)
    args = parser.parse_args()
    report = write_trained_model(args.out, steps=args.steps)
    print(report.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
