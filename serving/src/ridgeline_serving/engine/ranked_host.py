"""``ranked.draw_ranked``'s draw for a CPU replica, on the ranked arrays in numpy: on rows x k
arrays (256 x 50) torch's cost per operation was most of the work, and small vocabularies are
selected by sorting packed keys (``_best``). The same distribution, the same ties rule (by
value, then by lowest token id) and the same uniforms: a seeded row draws the same token
either way, except for a draw on a rounding boundary (numpy's exp against torch's softmax)."""

from __future__ import annotations

import numpy as np
import torch

from ridgeline_serving.engine.ranked import (
    Filters,
    draw_ranked,
    group_maxima,
    group_tokens,
    largest,
    ranked_width,
)

# Up to this vocabulary the k best are selected by sorting packed keys (two rounds, as
# ``ranked.select_top``); above it by topk. Measured with one thread on this repository's
# machine, 256 rows, k 50: 1,024 tokens 0.58 against 1.87 ms, 2,048 1.7 against 2.9, 4,096
# 3.8 against 4.1, 8,192 7.7 against 5.9 (the first round's groups outgrow the sort).
SORTED_SELECTION_VOCAB = 4096
_LOW = np.int64(0xFFFFFFFF)


def draw_ranked_on_host(logits: torch.Tensor, f: Filters) -> torch.Tensor:
    """One token per row of CPU ``logits``, within its top_k and the top_p of it."""
    vocab = logits.shape[-1]
    k = ranked_width(f.top_k, vocab)
    if k == vocab:
        return draw_ranked(logits, f)
    v, t = _best(logits, k)
    rows, w = v.shape
    drop = np.arange(w) >= np.where((f.top_k > 0) & (f.top_k < w), f.top_k, w)[:, None]
    z = v * (1.0 / f.temperature).astype(np.float32)[:, None]
    z[drop] = -np.inf
    e = np.exp(z - z[:, :1])
    mass = np.cumsum(e, axis=1)
    # the top_k's mass above each token, read at the first of its ties (ties at top_p's edge
    # stay in together)
    before = (mass - e) / mass[:, -1:]
    if (v[:, 1:] == v[:, :-1]).any():
        before = np.take_along_axis(before, _first_of_run(v), 1)
    top_p = f.top_p[:, None]
    drop |= (before >= top_p) & (before > 0) & (top_p < 1)
    drop[:, 0] = False  # the most likely token always stays
    e[drop] = 0.0
    cdf = np.cumsum(e, axis=1)
    total = cdf[:, -1]
    target = np.minimum(f.u.astype(np.float32) * total, np.nextafter(total, np.float32(0)))
    chosen = np.minimum((cdf <= target[:, None]).sum(axis=1), w - 1)
    every = np.arange(rows)
    token = t[every, chosen]
    value = v[every, chosen]
    # a run of ties at the k-th value may go on past the ranked tokens: the j-th tied rank is
    # then the j-th lowest id with that value in the whole row
    for r in np.flatnonzero(value == v[:, -1]):
        place = chosen[r] - int(np.argmax(v[r] == value[r]))
        token[r] = np.flatnonzero(logits[r].numpy() == value[r])[place]
    return torch.from_numpy(token)


def _best(logits: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k largest values, largest first, ties by lowest id, and their ids."""
    vocab = logits.shape[-1]
    grouped = group_maxima(logits, k) if vocab <= SORTED_SELECTION_VOCAB else None
    if grouped is None:
        values, ids = largest(logits, k)
        return values.numpy(), ids.numpy()
    maxima, size = grouped
    best_groups = _top_ids(maxima.numpy(), np.arange(maxima.shape[1]), k)
    ids = group_tokens(torch.from_numpy(best_groups), size, vocab)
    top = torch.from_numpy(_top_ids(logits.gather(1, ids).numpy(), ids.numpy(), k))
    return logits.gather(1, top).numpy(), top.numpy()


def _top_ids(values: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """The ids of each row's k largest values, largest first, ties by lowest id: one sort of
    int64 keys (the float's bits made monotone, then the inverted id), which numpy sorts with
    SIMD, where argsort or topk would sort (value, index) pairs."""
    # -0.0 as 0.0 (equal values, tied by id as elsewhere); NaN as the largest, as topk has it
    bits = np.where(np.isnan(values), np.float32(np.inf), values + np.float32(0)).view(np.int32)
    monotone = bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))
    keys = (monotone.astype(np.int64) << 32) | (_LOW - ids)
    top = np.sort(keys, axis=1)[:, : -k - 1 : -1]
    chosen: np.ndarray = _LOW - (top & _LOW)
    return chosen


def _first_of_run(v: np.ndarray) -> np.ndarray:
    """For each place of rows sorted in descending order, where its run of equal values starts."""
    starts = np.ones(v.shape, dtype=bool)
    starts[:, 1:] = v[:, 1:] != v[:, :-1]
    return np.maximum.accumulate(np.where(starts, np.arange(v.shape[1]), 0), axis=1)
