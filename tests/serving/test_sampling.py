"""Batched sampling and incremental detokenization, without a model."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from ridgeline_serving.engine.detokenize import Detokenizer
from ridgeline_serving.engine.sampling import RowParams, sample, uniform, uniforms


def row(
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int | None = None,
    logprobs: int | None = None,
) -> RowParams:
    if seed is None:
        seed = random.getrandbits(63)
    return RowParams(temperature, top_p, top_k, 0.0, 0.0, logprobs, seed, [])


def test_seeded_rows_do_not_depend_on_their_neighbours() -> None:
    logits = torch.randn(4, 1000)
    alone = [sample(logits[2:3], [row(seed=11)]).tokens[0] for _ in range(1)]
    batch = sample(logits, [row(), row(temperature=0), row(seed=11), row(top_p=0.5)]).tokens
    assert batch[2] == alone[0]
    again = [sample(logits[2:3], [row(seed=11)]).tokens[0] for _ in range(1)]
    assert again == alone


def test_greedy_top_k_1_and_tiny_top_p_pick_the_argmax() -> None:
    logits = torch.randn(3, 500)
    best = logits.argmax(-1).tolist()
    tokens = sample(logits, [row(temperature=0), row(top_k=1), row(top_p=1e-6)]).tokens
    assert tokens == best


def test_top_k_keeps_draws_among_the_k_best() -> None:
    logits = torch.randn(1, 50).repeat(200, 1)
    top3 = set(logits[0].topk(3).indices.tolist())
    drawn = set(sample(logits, [row(temperature=2.0, top_k=3) for _ in range(200)]).tokens)
    assert drawn <= top3
    assert len(drawn) > 1


def test_sampling_follows_the_distribution() -> None:
    probs = torch.tensor([0.7, 0.2, 0.1])
    logits = probs.log().repeat(4000, 1)
    tokens = torch.tensor(sample(logits, [row() for _ in range(4000)]).tokens)
    freq = torch.bincount(tokens, minlength=3).float() / 4000
    assert torch.allclose(freq, probs, atol=0.03)


def test_detokenizer_streams_multibyte_text_exactly(tiny_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    text = "ridge 日本語 ✓ naïve é"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text.split())  # multi-byte characters span several tokens
    detok = Detokenizer(tok, [])
    parts = [detok.add(t, i == len(ids) - 1)[0] for i, t in enumerate(ids)]
    assert "".join(parts) == text
    assert not any("\ufffd" in p for p in parts)


def test_detokenizer_stops_across_tokens_and_holds_a_possible_stop(tiny_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    ids = tok("the model serves the ridge", add_special_tokens=False)["input_ids"]
    detok = Detokenizer(tok, ["serves the r"])
    emitted, hit = "", False
    for t in ids:
        delta, hit = detok.add(t, False)
        emitted += delta
        assert "serves" not in emitted
        if hit:
            break
    assert hit
    assert emitted == "the model "


def test_rows_without_top_k_keep_their_whole_distribution_beside_top_k_rows() -> None:
    logits = torch.linspace(0, 0.1, 50).expand(400, 50)  # nearly uniform, no ties
    rows = [row(top_k=2) if i % 2 == 0 else row() for i in range(400)]
    tokens = sample(logits, rows).tokens
    assert len(set(tokens[0::2])) <= 2
    assert len(set(tokens[1::2])) > 10


def test_seeded_filtered_rows_do_not_depend_on_their_neighbours() -> None:
    logits = torch.randn(3, 300)
    alone = sample(logits[1:2], [row(seed=5, top_k=10, top_p=0.9)]).tokens[0]
    batch = sample(logits, [row(top_k=40), row(seed=5, top_k=10, top_p=0.9), row()]).tokens
    assert batch[1] == alone


def test_detokenizer_flushes_invalid_bytes_instead_of_holding_them(tiny_dir: Path) -> None:
    from transformers import AutoTokenizer

    from ridgeline_serving.engine.detokenize import MAX_PENDING_TOKENS

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    lead = tok.convert_tokens_to_ids("â")  # a UTF-8 lead byte that no continuation follows
    detok = Detokenizer(tok, [])
    parts, pending = [], []
    for _ in range(100):
        parts.append(detok.add(lead, False)[0])
        pending.append(len(detok.ids) - detok.read)
    # held back at most MAX_PENDING_TOKENS tokens at a time, then emitted as decode does
    assert max(pending) == MAX_PENDING_TOKENS
    assert set("".join(parts)) == {"\ufffd"}
    after = [detok.add(t, False)[0] for t in tok("ridge", add_special_tokens=False)["input_ids"]]
    assert "".join(after).endswith("ridge")


def test_filtered_rows_follow_their_renormalized_distribution() -> None:
    # top_k 3 keeps 0.4, 0.3, 0.2 (renormalized 4/9, 3/9, 2/9); top_p 0.6 of those keeps the
    # first two (the second starts at mass 4/9 < 0.6), renormalized 4/7, 3/7
    probs = torch.tensor([0.05, 0.4, 0.05, 0.3, 0.2])
    logits = probs.log().repeat(6000, 1)
    rows = [row(top_k=3) if i % 2 == 0 else row(top_k=3, top_p=0.6) for i in range(6000)]
    tokens = torch.tensor(sample(logits, rows).tokens)
    top_k = torch.bincount(tokens[0::2], minlength=5).float() / 3000
    both = torch.bincount(tokens[1::2], minlength=5).float() / 3000
    assert torch.allclose(top_k, torch.tensor([0, 4 / 9, 0, 3 / 9, 2 / 9]), atol=0.03)
    assert torch.allclose(both, torch.tensor([0, 4 / 7, 0, 3 / 7, 0]), atol=0.03)


def test_the_batched_uniforms_are_the_per_row_ones() -> None:
    seeds = [0, 1, 11, 2**63 - 1, 2**64 + 5, -3, 12345678901234567890]
    counters = [0, 1, 7, 1000, 3, 2, 99]
    assert uniforms(seeds, counters).tolist() == [
        uniform(s, c) for s, c in zip(seeds, counters, strict=True)
    ]


def test_a_drawn_value_shared_by_several_tokens_gives_the_first_of_them() -> None:
    """Whatever order the ranking gives equal logits: ties inside the ranked tokens, a tie that
    goes on past the top_k (the ranking holds only some of it), and rows ranked whole (top_p
    alone)."""
    logits = torch.tensor(
        [
            [3.0, 9.0, 9.0, 1.0, 2.0, 9.0],  # top_k 4: 9 9 9 3, the tie inside
            [1.0, 5.0, 2.0, 5.0, 5.0, 0.0],  # top_k 2: two of the three 5s
            [0.0, 4.0, 4.0, 4.0, 4.0, 4.0],  # top_p alone: the whole row is ranked
        ]
    )
    for seed in range(50):
        rows = [row(top_k=4, seed=seed), row(top_k=2, seed=seed), row(top_p=0.99, seed=seed)]
        tokens = sample(logits, rows).tokens
        assert tokens[0] in (1, 0)
        assert tokens[1] == 1
        assert tokens[2] in (1, 0)
    # torch's topk(1) of this row ranks token 2, not 0: the tie goes on past the ranking
    alternating = torch.tensor([[7.0, 0.0, 7.0, 0.0, 7.0, 0.0]])
    assert sample(alternating, [row(top_k=1)]).tokens == [0]
