"""Batched sampling and incremental detokenization, without a model."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ridgeline_serving.engine import ranked, ranked_host, sampling
from ridgeline_serving.engine.detokenize import Detokenizer
from ridgeline_serving.engine.randoms import seed_array, uniform, uniforms
from ridgeline_serving.engine.sampling import RowParams, sample


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


@pytest.fixture(params=["host", "device"])
def ranked_on(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Rows with a top_k drawn by the numpy path (a CPU replica's) and by the torch path (a
    GPU's), both run here on the CPU."""
    if request.param == "device":
        monkeypatch.setattr(sampling, "draw_ranked_on_host", ranked.draw_ranked)
    return str(request.param)


def test_seeded_rows_do_not_depend_on_their_neighbours() -> None:
    logits = torch.randn(4, 1000)
    alone = [sample(logits[2:3], [row(seed=11)]).tokens[0] for _ in range(1)]
    batch = sample(logits, [row(), row(temperature=0), row(seed=11), row(top_p=0.5)]).tokens
    assert batch[2] == alone[0]
    again = [sample(logits[2:3], [row(seed=11)]).tokens[0] for _ in range(1)]
    assert again == alone


def test_greedy_top_k_1_and_tiny_top_p_pick_the_argmax(ranked_on: str) -> None:
    logits = torch.randn(3, 500)
    best = logits.argmax(-1).tolist()
    tokens = sample(logits, [row(temperature=0), row(top_k=1), row(top_p=1e-6)]).tokens
    assert tokens == best


def test_top_k_keeps_draws_among_the_k_best(ranked_on: str) -> None:
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


def test_rows_without_top_k_keep_their_whole_distribution_beside_top_k_rows(ranked_on: str) -> None:
    logits = torch.linspace(0, 0.1, 50).expand(400, 50)  # nearly uniform, no ties
    rows = [row(top_k=2) if i % 2 == 0 else row() for i in range(400)]
    tokens = sample(logits, rows).tokens
    assert len(set(tokens[0::2])) <= 2
    assert len(set(tokens[1::2])) > 10


def test_seeded_filtered_rows_do_not_depend_on_their_neighbours(ranked_on: str) -> None:
    logits = torch.randn(3, 300)
    alone = sample(logits[1:2], [row(seed=5, top_k=10, top_p=0.9)]).tokens[0]
    batch = sample(logits, [row(top_k=40), row(seed=5, top_k=10, top_p=0.9), row()]).tokens
    assert batch[1] == alone


def test_detokenizer_flushes_invalid_bytes_instead_of_holding_them(tiny_dir: Path) -> None:
    from transformers import AutoTokenizer

    from ridgeline_serving.engine.detokenize import MAX_PENDING_TOKENS

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    lead = tok.convert_tokens_to_ids("â")  # a UTF-8 lead byte that no continuation follows
    assert isinstance(lead, int)
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


def test_filtered_rows_follow_their_renormalized_distribution(ranked_on: str) -> None:
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
    for stream in (0, 1, 23):
        batched = uniforms(seed_array(seeds), np.array(counters), stream)
        assert batched.tolist() == [
            uniform(s, c, stream) for s, c in zip(seeds, counters, strict=True)
        ]
    assert uniform(11, 3, 0) != uniform(11, 3, 1)


def test_tied_tokens_each_keep_their_share_and_a_cut_tie_takes_the_lowest_ids(
    ranked_on: str,
) -> None:
    """Equal logits (common in bfloat16) are distinct tokens: each is drawn, whatever order a
    kernel ranked them in. A top_k that cuts a run of ties keeps its lowest ids, alone or in
    any batch."""
    logits = torch.tensor(
        [
            [3.0, 9.0, 9.0, 1.0, 2.0, 9.0],  # top_k 4: 9 9 9 3, the tie inside
            [1.0, 5.0, 2.0, 5.0, 5.0, 0.0],  # top_k 2: two of the three 5s
            [0.0, 4.0, 4.0, 4.0, 4.0, 4.0],  # top_p alone: the nucleus sampler
        ]
    )
    seen: list[set[int]] = [set(), set(), set()]
    for seed in range(200):
        rows = [row(top_k=4, seed=seed), row(top_k=2, seed=seed), row(top_p=0.99, seed=seed)]
        for i, token in enumerate(sample(logits, rows).tokens):
            seen[i].add(token)
        assert sample(logits[1:2], [row(top_k=2, seed=seed)]).tokens[0] in (1, 3)
    assert {1, 2, 5} <= seen[0] <= {0, 1, 2, 5}  # token 0's share is 0.08%
    assert seen[1] == {1, 3}
    assert seen[2] == {1, 2, 3, 4, 5}  # token 0 is past the 0.99
    # torch's topk(1) of this row ranks token 2, not 0: the tie goes on past the ranking
    alternating = torch.tensor([[7.0, 0.0, 7.0, 0.0, 7.0, 0.0]])
    assert sample(alternating, [row(top_k=1)]).tokens == [0]
    assert {sample(alternating, [row(top_k=2)]).tokens[0] for _ in range(100)} == {0, 2}


def frequencies(tokens: list[int], size: int) -> torch.Tensor:
    return torch.bincount(torch.tensor(tokens), minlength=size).float() / len(tokens)


@pytest.mark.parametrize("ranked", [False, True], ids=["nucleus sampler", "ranked (GPU)"])
def test_top_p_alone_draws_its_nucleus_renormalized(ranked: bool) -> None:
    # top_p 0.6 keeps 0.4 and 0.3 (the 0.3 starts at mass 0.4 < 0.6), renormalized 4/7, 3/7;
    # top_p 0.5 of three tied 0.3s keeps all three: none has a likelier token above it
    draw = _ranked_only if ranked else _sampled
    probs = torch.tensor([0.05, 0.4, 0.05, 0.3, 0.2])
    tokens = draw(probs.log().repeat(6000, 1), [row(top_p=0.6) for _ in range(6000)])
    assert torch.allclose(frequencies(tokens, 5), torch.tensor([0, 4 / 7, 0, 3 / 7, 0]), atol=0.03)
    tied = torch.tensor([0.3, 0.1, 0.3, 0.3])
    tokens = draw(tied.log().repeat(6000, 1), [row(top_p=0.5) for _ in range(6000)])
    assert torch.allclose(frequencies(tokens, 4), torch.tensor([1 / 3, 0, 1 / 3, 1 / 3]), atol=0.03)


def _sampled(logits: torch.Tensor, rows: list[RowParams]) -> list[int]:
    return sample(logits, rows).tokens


def _ranked_only(logits: torch.Tensor, rows: list[RowParams]) -> list[int]:
    """The path a GPU takes for top_p rows, run on the CPU."""
    from ridgeline_serving.engine.sampling import _Table

    table = _Table.of(rows)
    filters = ranked.Filters(table.temperature, table.top_k, table.top_p, table.u())
    return ranked.draw_ranked(logits, filters).tolist()


def test_nucleus_rows_are_exact_for_a_long_flat_tail_and_a_tiny_top_p() -> None:
    """Many rejection rounds: a vocabulary of 4,096 nearly equal tokens and top_p 0.001 keeps
    the likeliest few; past MAX_ROUNDS the undecided rows are settled by sorting."""
    logits = torch.linspace(0, 0.05, 4096).repeat(300, 1)
    probs = torch.softmax(logits[0], -1)
    ranked = probs.sort(descending=True)
    kept = int(((ranked.values.cumsum(0) - ranked.values) < 0.001).sum())
    allowed = set(ranked.indices[:kept].tolist())
    tokens = sample(logits, [row(top_p=0.001, seed=s) for s in range(300)]).tokens
    assert set(tokens) <= allowed
    assert len(set(tokens)) > 1
    assert sample(logits[:1], [row(top_p=0.001, seed=7)]).tokens == tokens[7:8]


def test_nucleus_rows_do_not_depend_on_their_neighbours() -> None:
    logits = torch.randn(5, 700) * 3
    rows = [row(top_p=0.8, seed=s) for s in range(5)]
    alone = [sample(logits[i : i + 1], [rows[i]]).tokens[0] for i in range(5)]
    mixed_logits = torch.cat([logits[:2], torch.randn(2, 700), logits[2:]])
    batch = sample(mixed_logits, [*rows[:2], row(top_k=5), row(temperature=0), *rows[2:]]).tokens
    assert batch[:2] + batch[4:] == alone


@pytest.mark.parametrize(
    ("vocab", "k"), [(1024, 50), (1000, 50), (1027, 20), (4099, 7), (300, 100), (64, 17)]
)
def test_the_cpu_selection_in_groups_keeps_the_k_largest_values(vocab: int, k: int) -> None:
    torch.manual_seed(vocab + k)
    padded = torch.randn(40, vocab + 13)
    padded[:20] = torch.randint(0, 6, (20, vocab + 13)).float()  # runs of equal values
    logits = padded[:, :vocab]  # a view, as past the tokenizer's ids
    values, ids = ranked.select_top(logits, k)
    expected = logits.topk(k, dim=-1).values
    assert torch.equal(values.sort(dim=-1, descending=True).values, expected)
    assert torch.equal(logits.gather(1, ids), values)
    assert all(len(set(row)) == k for row in ids.tolist())


@pytest.mark.parametrize("vocab", [1024, 1000, 300, ranked_host.SORTED_SELECTION_VOCAB + 8])
def test_the_host_selection_ranks_by_value_then_lowest_id(vocab: int) -> None:
    torch.manual_seed(vocab)
    logits = torch.randn(30, vocab)
    logits[:15] = torch.randint(0, 6, (15, vocab)).float()  # runs of equal values
    values, ids = ranked_host._best(logits, 40)
    for row, v, t in zip(logits.tolist(), values.tolist(), ids.tolist(), strict=True):
        # the first 40 of (value descending, id ascending), except that a run of ties cut at
        # the 40th value may hold other ids of that value: the draw resolves those
        expected = sorted(range(vocab), key=lambda i: (-row[i], i))[:40]
        assert v == [row[i] for i in expected]
        inside = [i for i, x in zip(t, v, strict=True) if x != v[-1]]
        assert inside == [i for i in expected if row[i] != v[-1]]


def test_the_host_and_device_draws_agree_for_seeded_rows() -> None:
    torch.manual_seed(3)
    logits = torch.randn(64, 1024) * 2
    rows = [
        row(temperature=0.7, top_k=1 + s % 60, top_p=0.5 + s % 5 / 10, seed=s) for s in range(64)
    ]
    table = sampling._Table.of(rows)
    filters = ranked.Filters(table.temperature, table.top_k, table.top_p, table.u())
    host = ranked_host.draw_ranked_on_host(logits, filters).tolist()
    device = ranked.draw_ranked(logits, filters).tolist()
    # float rounding may move a draw that lands on a boundary; nothing else differs
    assert sum(h == d for h, d in zip(host, device, strict=True)) >= 62


def test_a_nan_logit_fails_no_row_and_moves_no_other_row(ranked_on: str) -> None:
    """A model that emits NaN for one row (a broken checkpoint, an overflow) must not take the
    batch down: every kind of row still gets a token, and the other rows the same ones."""
    torch.manual_seed(5)
    logits = torch.randn(6, 64)
    rows = [
        row(temperature=0, seed=1),
        row(seed=2),
        row(top_p=0.7, seed=3),
        row(top_k=5, seed=4),
        row(top_k=100, top_p=0.9, seed=5),  # top_k past the vocabulary: the whole row ranked
        row(top_k=5, seed=6),
    ]
    clean = sample(logits, rows).tokens
    for broken in range(6):
        poisoned = logits.clone()
        poisoned[broken, 7] = float("nan")
        tokens = sample(poisoned, rows).tokens
        assert all(0 <= t < 64 for t in tokens)
        assert tokens[:broken] + tokens[broken + 1 :] == clean[:broken] + clean[broken + 1 :]


def test_top_p_keeps_the_same_tokens_on_every_path() -> None:
    """top_p is compared in float64 everywhere: a top_p just above a token's mass before it
    keeps that token on the nucleus sampler, its sorting fallback and the ranked path alike."""
    from ridgeline_serving.engine import nucleus

    logits = torch.tensor([[0.625, 0.25, 0.125]]).log().repeat(400, 1)
    probs = torch.softmax(logits, dim=-1)
    top_p = float(probs[0, 0]) + 1e-12  # float32 rounds it to the first token's mass
    rows = [row(top_p=top_p, seed=s) for s in range(400)]
    table = sampling._Table.of(rows)
    rejection = set(sample(logits, rows).tokens)
    fallback = set(
        nucleus._draw_by_sorting(probs, torch.from_numpy(table.top_p), table.u()).tolist()
    )
    ranked_rows = set(_ranked_only(logits, rows))
    assert rejection == fallback == ranked_rows == {0, 1}


def test_a_temperature_too_small_to_divide_by_is_greedy() -> None:
    logits = torch.randn(4, 300)
    rows = [row(temperature=1e-40, **kw) for kw in ({}, {"top_p": 0.5}, {"top_k": 9}, {})]
    assert sample(logits, rows).tokens == logits.argmax(-1).tolist()


def test_the_host_selection_ties_minus_zero_with_zero_by_id() -> None:
    logits = torch.full((1, 64), -5.0)
    logits[0, 3], logits[0, 10], logits[0, 20] = -0.0, 0.0, 1.0
    _, ids = ranked_host._best(logits, 3)
    assert ids.tolist() == [[20, 3, 10]]


def test_the_repetition_penalty_is_transformers_on_the_same_logits() -> None:
    from transformers import RepetitionPenaltyLogitsProcessor

    torch.manual_seed(0)
    logits = torch.randn(4, 300) * 3
    prompts = [[5, 6, 7, 5], [], [299, 0], [1, 2]]
    outputs = [[8, 9, 8], [10, 11], [], [3]]
    penalties = [1.3, 0.6, 2.0, 1.0]
    rows = [
        replace(row(), repetition_penalty=p, prompt_ids=prompt, output_ids=out)
        for p, prompt, out in zip(penalties, prompts, outputs, strict=True)
    ]
    got = sampling._penalize(logits, rows, sampling._Table.of(rows))
    for i, (p, prompt, out) in enumerate(zip(penalties, prompts, outputs, strict=True)):
        seen = torch.tensor([prompt + out])
        expected = RepetitionPenaltyLogitsProcessor(p)(seen, logits[i : i + 1].clone())
        assert torch.equal(got[i : i + 1], expected)
    assert torch.equal(got[3], logits[3])  # 1.0 is off


def test_the_repetition_penalty_comes_before_presence_and_frequency() -> None:
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    rows = [RowParams(1.0, 1.0, 0, 0.25, 0.5, None, 1, [1, 1], 2.0, 0, (), [0])]
    got = sampling._penalize(logits, rows, sampling._Table.of(rows))
    # vLLM's order: 2 / 2, -2 x 2, then -2 x 0.5 (frequency) - 0.25 (presence) for token 1
    assert got.tolist() == [[1.0, -4.0 - 1.0 - 0.25, 1.0, 0.5]]


def test_min_tokens_keeps_the_end_of_sequence_from_being_drawn(ranked_on: str) -> None:
    logits = torch.zeros(6, 50)
    logits[:, 7] = 30.0  # the end of sequence, near certain
    rows = [
        replace(row(temperature=0), min_tokens=3, eos_ids=(7, 60), output_ids=[1, 2]),
        replace(row(seed=1), min_tokens=3, eos_ids=(7,), output_ids=[1]),
        replace(row(top_k=5, seed=2), min_tokens=3, eos_ids=(7,)),
        replace(row(top_p=0.5, seed=3), min_tokens=1, eos_ids=(7,)),
        replace(row(temperature=0), min_tokens=3, eos_ids=(7,), output_ids=[1, 2, 3]),
        replace(row(seed=4), min_tokens=0, eos_ids=(7,)),
    ]
    result = sample(logits, rows)
    assert 7 not in result.tokens[:4]
    assert result.tokens[4:] == [7, 7]  # min_tokens reached (or none): no longer held off


def test_row_parameters_past_the_vocabulary_are_the_vocabulary() -> None:
    from ridgeline_serving.engine.row_params import checked

    assert checked(row(top_k=10**30), 500).top_k == 0
    assert checked(row(top_k=500), 500).top_k == 0
    assert checked(row(top_k=-1), 500).top_k == 0
    assert checked(row(top_k=499), 500).top_k == 499
    assert checked(row(logprobs=10**30), 500).logprobs == 500
    assert checked(row(seed=-(2**200)), 500).seed == -(2**200)  # wraps as every seed does
    with pytest.raises(ValueError, match="temperature"):
        checked(row(temperature=float("nan")), 500)


def test_a_batch_of_new_rows_is_sampled_with_its_own_parameters() -> None:
    """The per-row constants are kept from one step to the next while the rows are the same
    objects: new rows at the same positions (a batch that turned over) must not get the old
    rows' parameters, and a kept row's arrays must not carry an earlier step's edits."""
    logits = torch.zeros(2, 50)
    logits[:, 7] = 30.0  # the end of sequence, near certain
    held = [replace(row(temperature=0), min_tokens=3, eos_ids=(7,)) for _ in range(2)]
    assert 7 not in sample(logits, held).tokens
    assert 7 not in sample(logits, held).tokens  # the same rows again: the kept constants
    free = [replace(row(temperature=0), min_tokens=0, eos_ids=(7,)) for _ in range(2)]
    assert sample(logits, free).tokens == [7, 7]
    table = sampling._Table.of(free)
    table.min_tokens[:] = 5  # a draw that wrote into its table must not reach the next step
    assert sampling._Table.of(free).min_tokens.tolist() == [0, 0]
