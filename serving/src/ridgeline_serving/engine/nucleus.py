"""Exact nucleus (top_p) sampling without ranking the vocabulary, for the CPU.

A token belongs to a row's nucleus when the probability mass of the tokens strictly likelier
than it is below top_p (ties at the edge stay in together). Ranking a whole vocabulary to find
that edge is the costliest thing a CPU can do in a step (``torch.sort`` of 256 rows x 1,024
took 12 ms on this repository's machine, of 128k tokens seconds), so this samples by rejection
instead, as FlashInfer's GPU kernels do: draw from the row's distribution over the tokens still
allowed, in vocabulary order; keep the draw if it is in the nucleus; otherwise nothing as
unlikely as it can be in the nucleus, so the next draw allows only likelier tokens. A kept draw
is distributed as the nucleus, renormalized; the first draw is kept with probability at least
top_p, and each rejection raises the floor, so few rounds run and later ones touch only the
rows still undecided. Each round needs its answer on the host, which is free on the CPU; on a
GPU the engine ranks instead (a sort there costs little and no synchronisation).
"""

from __future__ import annotations

import numpy as np
import torch

from ridgeline_serving.engine.randoms import uniforms

# Rounds before the rows still undecided are settled by sorting them (exact too): a guard for
# pathological rows, never reached by a distribution whose nucleus holds top_p of its mass
# within a few halvings of the vocabulary.
MAX_ROUNDS = 24
PREPARED_ROUNDS = 3


def invert_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Each row's index where its cumulative weight first exceeds u x its total (rows x W
    non-negative weights, u in [0, 1)): a draw from the weights. The target stays strictly
    below the total, so a u that rounds to 1.0 in float32 cannot land past the last token that
    has weight."""
    cdf = weights.cumsum(dim=-1)
    total = cdf[:, -1:]
    target = torch.minimum(u.unsqueeze(1) * total, torch.nextafter(total, torch.zeros_like(total)))
    drawn = torch.searchsorted(cdf, target, right=True).squeeze(1)
    return drawn.clamp_(max=weights.shape[-1] - 1)


def in_nucleus(probs: torch.Tensor, drawn: torch.Tensor, top_p: np.ndarray) -> np.ndarray:
    """Whether each row's drawn token is in its nucleus (the likeliest tokens always are, so a
    top_p of 0 keeps the most likely token(s), as greedy decoding would). CPU tensors: numpy's
    masked sum is 1.5-2.5x faster here than torch's broadcast comparison."""
    p = probs.numpy()
    value = np.take_along_axis(p, drawn.numpy()[:, None], axis=1)
    above = (p * (p > value)).sum(axis=-1)
    kept: np.ndarray = (above < top_p) | (above == 0)
    return kept


def draw_nucleus(
    probs: torch.Tensor, top_p: np.ndarray, seeds: np.ndarray, counters: np.ndarray
) -> torch.Tensor:
    """One token per row of ``probs`` (rows x vocab, each row summing to 1), from the row's
    top_p nucleus; round r uses each row's stream-r uniform (``uniforms``)."""
    tokens = np.empty(probs.shape[0], dtype=np.int64)
    # the first rounds' numbers for every row at once: most rows need one, few need three
    u = uniforms(seeds, counters, np.arange(PREPARED_ROUNDS, dtype=np.uint64)[:, None])
    active = np.arange(probs.shape[0])
    p, floor = probs, None
    for stream in range(MAX_ROUNDS):
        u_now = u[stream, active] if stream < PREPARED_ROUNDS else None
        if u_now is None:
            u_now = uniforms(seeds[active], counters[active], stream)
        weights = p if floor is None else torch.where(p > floor, p, 0.0)
        drawn = invert_cdf(weights, torch.from_numpy(u_now).float())
        kept = in_nucleus(p, drawn, top_p[active])
        tokens[active[kept]] = drawn.numpy()[kept]
        if kept.all():
            return torch.from_numpy(tokens)
        rejected = torch.from_numpy(~kept)
        floor = p.gather(1, drawn.unsqueeze(1))[rejected]
        active, p = active[~kept], p[rejected]
    last = uniforms(seeds[active], counters[active], MAX_ROUNDS)
    tokens[active] = _draw_by_sorting(p, torch.from_numpy(top_p[active]), last).numpy()
    return torch.from_numpy(tokens)


def _draw_by_sorting(probs: torch.Tensor, top_p: torch.Tensor, u: np.ndarray) -> torch.Tensor:
    """The same nucleus found by ranking: its edge is the last ranked value whose mass before
    it is below top_p (every token at or above that value is in)."""
    ranked = probs.sort(dim=-1, descending=True).values
    before = ranked.cumsum(dim=-1) - ranked
    last = ((before < top_p.unsqueeze(1)).sum(dim=-1, keepdim=True) - 1).clamp_(min=0)
    edge = ranked.gather(1, last)
    return invert_cdf(torch.where(probs >= edge, probs, 0.0), torch.from_numpy(u).float())
