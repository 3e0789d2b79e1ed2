"""Sampling on the model's device, batched over rows: per-row temperature, top_p, top_k,
presence and frequency penalties and seed, in a fixed number of kernels whatever the batch.

Each row draws its token by inverting its cumulative distribution at one uniform number (in
vocabulary order, or in rank order over its best tokens when it filters). That number is a
hash (splitmix64) of the row's seed and its token index: a seeded row gives the same tokens
alone or in any batch, and the per-step randomness is one number per row instead of one per
vocabulary entry. Rows without a seed get a random one. top_k and top_p rank the row's largest
values only; the vocabulary is never ranked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class RowParams:
    temperature: float
    top_p: float
    top_k: int
    presence_penalty: float
    frequency_penalty: float
    logprobs: int | None
    seed: int
    output_ids: list[int]  # the sequence's own list, grown by the scheduler


@dataclass(frozen=True)
class Sampled:
    """Host copies, fetched after one synchronisation."""

    tokens: list[int]
    logprobs: list[float] | None
    top_ids: list[list[int]] | None
    top_logprobs: list[list[float]] | None


@dataclass(frozen=True)
class _Table:
    """The rows' parameters as arrays, read from the rows once per step: every later decision
    is one array operation, not another pass over the rows in Python."""

    temperature: np.ndarray  # float64
    top_p: np.ndarray  # float64
    top_k: np.ndarray  # int64, 0 = off
    presence: np.ndarray  # float64
    frequency: np.ndarray  # float64

    @classmethod
    def of(cls, rows: list[RowParams]) -> _Table:
        # one list per field: cheaper than one array of tuples
        return cls(
            np.array([r.temperature for r in rows], dtype=np.float64),
            np.array([r.top_p for r in rows], dtype=np.float64),
            np.array([r.top_k for r in rows], dtype=np.int64),
            np.array([r.presence_penalty for r in rows], dtype=np.float64),
            np.array([r.frequency_penalty for r in rows], dtype=np.float64),
        )

    @property
    def penalized(self) -> bool:
        return bool(self.presence.any() or self.frequency.any())


def sample(logits: torch.Tensor, rows: list[RowParams]) -> Sampled:
    """Next token per row of ``logits`` (rows x vocab, any float dtype)."""
    logits = logits.float()
    raw = logits
    table = _Table.of(rows)
    if table.penalized:
        logits = _penalize(logits, rows, table)
    greedy = table.temperature == 0
    tokens = logits.argmax(dim=-1) if greedy.all() else _draw(logits, rows, table)

    wanted = [r.logprobs for r in rows if r.logprobs is not None]
    if not wanted:
        return Sampled(tokens.tolist(), None, None, None)
    logp = torch.log_softmax(raw, dim=-1)
    chosen = logp.gather(1, tokens.unsqueeze(1)).squeeze(1)
    k = max(wanted)
    top = logp.topk(k, dim=-1) if k > 0 else None
    return Sampled(
        tokens.tolist(),
        chosen.tolist(),
        top.indices.tolist() if top is not None else [[] for _ in rows],
        top.values.tolist() if top is not None else [[] for _ in rows],
    )


def _on(device: torch.device, array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(array).to(device=device, dtype=dtype)


def _draw(logits: torch.Tensor, rows: list[RowParams], table: _Table) -> torch.Tensor:
    device = logits.device
    greedy = table.temperature == 0
    divisor = _on(device, np.where(greedy, 1.0, table.temperature), torch.float32).unsqueeze(1)
    u = uniforms([r.seed for r in rows], [len(r.output_ids) for r in rows])
    u_t = _on(device, u, torch.float32)
    filtering = (table.top_k > 0) | (table.top_p < 1.0)
    drawn = None
    if not filtering.all():
        # unfiltered rows invert their distribution in vocabulary order
        cdf = torch.softmax(logits / divisor, dim=-1).cumsum_(dim=-1)
        drawn = torch.searchsorted(cdf, (u_t * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)
        drawn = drawn.clamp_(max=logits.shape[-1] - 1)
    if filtering.any():
        ranked = _draw_ranked(logits, divisor, table, u_t)
        drawn = (
            ranked
            if drawn is None
            else torch.where(_on(device, filtering, torch.bool), ranked, drawn)
        )
    assert drawn is not None
    if greedy.any():
        return torch.where(_on(device, greedy, torch.bool), logits.argmax(dim=-1), drawn)
    return drawn


MASK64 = (1 << 64) - 1


def uniform(seed: int, counter: int) -> float:
    """splitmix64 of (seed, counter), as a float in [0, 1)."""
    x = (seed * 0x9E3779B97F4A7C15 + (counter + 1) * 0xD1B54A32D192ED03) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    x ^= x >> 31
    return (x >> 11) / float(1 << 53)


def uniforms(seeds: list[int], counters: list[int]) -> np.ndarray:
    """``uniform`` for every row at once (the same bits: uint64 arithmetic wraps at 2**64)."""
    x = np.array([seed & MASK64 for seed in seeds], dtype=np.uint64)
    c = np.array(counters, dtype=np.uint64) + np.uint64(1)
    with np.errstate(over="ignore"):
        x = x * np.uint64(0x9E3779B97F4A7C15) + c * np.uint64(0xD1B54A32D192ED03)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    out: np.ndarray = (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return out


def _width(top_k: np.ndarray, vocab: int) -> int:
    """How many of a row's best tokens the filters can keep: the largest top_k when every row
    has one, else the whole vocabulary."""
    if (top_k > 0).all():
        return min(vocab, int(top_k.max()))
    return vocab


def _draw_ranked(
    logits: torch.Tensor, divisor: torch.Tensor, table: _Table, u: torch.Tensor
) -> torch.Tensor:
    """Filtered rows: each inverts the distribution of its best tokens, in rank order, within
    its top_k and its top_p mass (top_p over the top_k, renormalized). Only the ranked values
    are computed (when every row has a top_k, only the largest k), and ranked before the
    temperature divides them (a positive temperature keeps the order), so the division costs
    k values a row, not the vocabulary. The token drawn is, of the tokens tied at the drawn
    value, the first (``_first_at``), whatever order the ranking gave ties, so a seeded row's
    draw does not depend on the kernel its batch size selects."""
    device = logits.device
    width = _width(table.top_k, logits.shape[-1])
    values, ids = _largest(logits, width)
    top_k = np.where((table.top_k > 0) & (table.top_k < width), table.top_k, width)
    rank = torch.arange(width, device=device).expand_as(values)
    drop = rank >= _on(device, top_k, torch.long).unsqueeze(1)
    probs = torch.softmax((values / divisor).masked_fill_(drop, float("-inf")), dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above this one
    drop |= before >= _on(device, table.top_p, torch.float32).unsqueeze(1)
    drop[:, 0] = False  # the most likely token always stays
    cdf = probs.masked_fill_(drop, 0.0).cumsum_(dim=-1)
    chosen = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True)
    value = values.gather(1, chosen.clamp_(max=width - 1))
    return _first_at(logits, values, ids, value)


def _first_at(
    logits: torch.Tensor, values: torch.Tensor, ids: torch.Tensor, value: torch.Tensor
) -> torch.Tensor:
    """Each row's lowest token id whose logit is ``value`` (rows x 1): found among the ranked
    tokens, except in rows whose tie at it may go on past them (it equals the last ranked value,
    and the ranking did not cover the vocabulary), which search the whole row. On the GPU the
    whole rows are searched always: choosing which would take a host synchronisation."""
    vocab = logits.shape[-1]
    first = torch.where(values == value, ids, vocab).amin(dim=-1)
    if values.shape[-1] == vocab:
        return first
    spill = value.squeeze(1) == values[:, -1]
    if logits.device.type != "cpu":
        whole = (logits == value).to(torch.uint8).argmax(dim=-1)
        return torch.where(spill, whole, first)
    if bool(spill.any()):
        rows = spill.nonzero().squeeze(1)
        first[rows] = (logits[rows] == value[rows]).to(torch.uint8).argmax(dim=-1)
    return first


def _largest(logits: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's ``width`` largest values, in descending order, and their token ids: torch's
    topk on every device. numpy's partition was used on the CPU once, but with torch 2.15 and
    numpy 2.4 on this repository's machine it is 3-5x slower than topk at vocabularies of
    32k-128k, and 10x slower at any size when many logits are equal (-inf for masked tokens:
    its selection degrades on ties)."""
    if width < logits.shape[-1]:
        values, ids = logits.topk(width, dim=-1)
    else:
        values, ids = logits.sort(dim=-1, descending=True)
    return values, ids


def _penalize(logits: torch.Tensor, rows: list[RowParams], table: _Table) -> torch.Tensor:
    """OpenAI's penalties: logit -= count * frequency + (count > 0) * presence."""
    device = logits.device
    counts = torch.zeros_like(logits)
    longest = max((len(r.output_ids) for r in rows), default=0)
    if longest == 0:
        return logits
    ids = torch.zeros((len(rows), longest), dtype=torch.long)
    ones = torch.zeros((len(rows), longest))
    for i, row in enumerate(rows):
        if row.output_ids and (row.presence_penalty or row.frequency_penalty):
            ids[i, : len(row.output_ids)] = torch.tensor(row.output_ids)
            ones[i, : len(row.output_ids)] = 1
    counts.scatter_add_(1, ids.to(device), ones.to(device))
    freq = _on(device, table.frequency, torch.float32).unsqueeze(1)
    pres = _on(device, table.presence, torch.float32).unsqueeze(1)
    return logits - counts * freq - (counts > 0).float() * pres
