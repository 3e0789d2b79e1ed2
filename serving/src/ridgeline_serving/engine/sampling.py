"""Sampling on the model's device, batched over rows: per-row temperature, top_p, top_k,
presence and frequency penalties and seed, in a fixed number of kernels whatever the batch.

A row with a seed draws its noise from its own generator, so its tokens do not depend on the
rows beside it; the other rows share one draw. Sampling is the exponential race (argmax of
p / q with q ~ Exp(1)), equivalent to multinomial sampling and free of a host round trip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RowParams:
    temperature: float
    top_p: float
    top_k: int
    presence_penalty: float
    frequency_penalty: float
    logprobs: int | None
    generator: torch.Generator | None
    output_ids: list[int]


@dataclass(frozen=True)
class Sampled:
    """Host copies, fetched after one synchronisation."""

    tokens: list[int]
    logprobs: list[float] | None
    top_ids: list[list[int]] | None
    top_logprobs: list[list[float]] | None


def sample(logits: torch.Tensor, rows: list[RowParams]) -> Sampled:
    """Next token per row of ``logits`` (rows x vocab, any float dtype)."""
    logits = logits.float()
    raw = logits
    if any(r.presence_penalty or r.frequency_penalty for r in rows):
        logits = _penalize(logits, rows)
    tokens = logits.argmax(dim=-1) if all(r.temperature == 0 for r in rows) else _draw(logits, rows)

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


def _draw(logits: torch.Tensor, rows: list[RowParams]) -> torch.Tensor:
    device = logits.device
    temps = torch.tensor([r.temperature for r in rows], device=device)
    greedy = temps == 0
    scaled = logits / torch.where(greedy, torch.ones_like(temps), temps).unsqueeze(1)
    if any(r.top_k > 0 or r.top_p < 1.0 for r in rows):
        scaled = _top_k_top_p(scaled, rows)
    probs = torch.softmax(scaled, dim=-1)
    noise = _exponential(probs.shape, rows, device)
    drawn = (probs / noise).argmax(dim=-1)
    return torch.where(greedy, logits.argmax(dim=-1), drawn)


def _exponential(shape: torch.Size, rows: list[RowParams], device: torch.device) -> torch.Tensor:
    noise = torch.empty(shape, device=device).exponential_()
    for i, row in enumerate(rows):
        if row.generator is not None:
            noise[i].exponential_(generator=row.generator)
    # exponential_ can return exactly 0; a zero would make p / q infinite for any p
    return noise.clamp_(min=1e-10)


def _top_k_top_p(logits: torch.Tensor, rows: list[RowParams]) -> torch.Tensor:
    device = logits.device
    vocab = logits.shape[-1]
    top_k = torch.tensor([r.top_k if 0 < r.top_k < vocab else vocab for r in rows], device=device)
    top_p = torch.tensor([r.top_p for r in rows], device=device)
    values, order = logits.sort(dim=-1, descending=True)
    rank = torch.arange(vocab, device=device).expand_as(values)
    drop = rank >= top_k.unsqueeze(1)
    probs = torch.softmax(values.masked_fill(drop, float("-inf")), dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above this one
    drop |= before >= top_p.unsqueeze(1)
    drop[:, 0] = False  # the most likely token always stays
    values = values.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(1, order, values)


def _penalize(logits: torch.Tensor, rows: list[RowParams]) -> torch.Tensor:
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
    freq = torch.tensor([r.frequency_penalty for r in rows], device=device).unsqueeze(1)
    pres = torch.tensor([r.presence_penalty for r in rows], device=device).unsqueeze(1)
    return logits - counts * freq - (counts > 0).float() * pres
