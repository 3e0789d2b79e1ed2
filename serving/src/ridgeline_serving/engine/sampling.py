"""Sampling on the model's device, batched over rows: per-row temperature, top_p, top_k,
presence and frequency penalties and seed, in a fixed number of kernels whatever the batch.

Rows are drawn by kind, each kind as one batch: greedy rows take their argmax; rows without a
filter invert their distribution, in vocabulary order, at one uniform number; rows with a
top_k rank their k best tokens only and invert in rank order, within the top_k and the top_p
of it; rows with a top_p alone sample their nucleus by rejection on the CPU (``nucleus``: no
ranking of the vocabulary) and rank on a GPU. The uniforms are hashes of the row's seed and
token index (``randoms``): a seeded row gives the same tokens alone or in any batch. Rows
without a seed get a random one.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from ridgeline_serving.engine.nucleus import draw_nucleus, invert_cdf
from ridgeline_serving.engine.randoms import seed_array, uniforms
from ridgeline_serving.engine.ranked import Filters, draw_ranked, on_device
from ridgeline_serving.engine.ranked_host import draw_ranked_on_host

GREEDY_BELOW = 1e-5


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
    seeds: np.ndarray  # uint64
    counters: np.ndarray  # int64: tokens the row has generated, its draw's index

    @classmethod
    def of(cls, rows: list[RowParams]) -> _Table:
        # one list per field: cheaper than one array of tuples
        return cls(
            np.array([r.temperature for r in rows], dtype=np.float64),
            np.array([r.top_p for r in rows], dtype=np.float64),
            np.array([r.top_k for r in rows], dtype=np.int64),
            np.array([r.presence_penalty for r in rows], dtype=np.float64),
            np.array([r.frequency_penalty for r in rows], dtype=np.float64),
            seed_array([r.seed for r in rows]),
            np.array([len(r.output_ids) for r in rows], dtype=np.int64),
        )

    def take(self, idx: np.ndarray) -> _Table:
        return _Table(*(getattr(self, field.name)[idx] for field in fields(self)))

    @property
    def penalized(self) -> bool:
        return bool(self.presence.any() or self.frequency.any())

    def u(self) -> np.ndarray:
        return uniforms(self.seeds, self.counters)


def sample(logits: torch.Tensor, rows: list[RowParams]) -> Sampled:
    """Next token per row of ``logits`` (rows x vocab, any float dtype)."""
    logits = logits.float()
    raw = logits
    table = _Table.of(rows)
    if table.penalized:
        logits = _penalize(logits, rows, table)
    tokens = _draw(logits, table)

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


def _draw(logits: torch.Tensor, table: _Table) -> torch.Tensor:
    """Each kind of row drawn as one batch (a kind holding every row reads ``logits`` in place)."""
    device = logits.device
    # below vLLM's epsilon a temperature is greedy: dividing by it overflows to inf and NaN
    greedy = table.temperature < GREEDY_BELOW
    ranked = ~greedy & ((table.top_k > 0) | ((table.top_p < 1.0) & (device.type != "cpu")))
    nucleus = ~greedy & ~ranked & (table.top_p < 1.0)
    plain = ~(greedy | ranked | nucleus)
    tokens = torch.empty(logits.shape[0], dtype=torch.long, device=device)
    for kind, draw in (
        (greedy, _argmax),
        (plain, _draw_plain),
        (nucleus, _draw_nucleus),
        (ranked, _draw_ranked),
    ):
        idx = np.flatnonzero(kind)
        if idx.size == len(kind):
            return draw(logits, table)
        if idx.size:
            rows = on_device(device, idx, torch.long)
            tokens[rows] = draw(logits[rows], table.take(idx))
    return tokens


def _argmax(logits: torch.Tensor, table: _Table) -> torch.Tensor:
    """The first largest logit's token. On the CPU numpy's argmax (vectorized) is 10x faster
    than torch's here: 0.02 against 0.23 ms for 256 rows x 1,024."""
    if logits.device.type == "cpu":
        return torch.from_numpy(logits.numpy().argmax(axis=-1))
    return logits.argmax(dim=-1)


def _divisor(logits: torch.Tensor, table: _Table) -> torch.Tensor:
    return on_device(logits.device, table.temperature, torch.float32).unsqueeze(1)


def _draw_plain(logits: torch.Tensor, table: _Table) -> torch.Tensor:
    probs = torch.softmax(logits / _divisor(logits, table), dim=-1)
    return invert_cdf(probs, on_device(logits.device, table.u(), torch.float32))


def _draw_nucleus(logits: torch.Tensor, table: _Table) -> torch.Tensor:
    probs = torch.softmax(logits / _divisor(logits, table), dim=-1)
    return draw_nucleus(probs, table.top_p, table.seeds, table.counters)


def _draw_ranked(logits: torch.Tensor, table: _Table) -> torch.Tensor:
    filters = Filters(table.temperature, table.top_k, table.top_p, table.u())
    if logits.device.type == "cpu":
        return draw_ranked_on_host(logits, filters)
    return draw_ranked(logits, filters)


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
    freq = on_device(device, table.frequency, torch.float32).unsqueeze(1)
    pres = on_device(device, table.presence, torch.float32).unsqueeze(1)
    return logits - counts * freq - (counts > 0).float() * pres
