"""Sampling of the rows that filter by rank: within a top_k, and within the top_p of it
(renormalized, as vLLM and transformers apply them). Only each row's k best tokens are ranked,
never the vocabulary (a GPU row with top_p alone ranks its whole row: a sort there is cheap;
on the CPU such rows take the nucleus sampler instead).

Equal logits (common in bfloat16) are distinct tokens, ranked by token id, so each keeps its
own share and a seeded row's draw does not depend on the order a kernel gave the ties. Ties at
top_p's edge stay in together, as in the nucleus sampler; a top_k that cuts a run of ties keeps
its lowest ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ridgeline_serving.engine.nucleus import invert_cdf


@dataclass(frozen=True)
class Filters:
    """Per row: temperature (positive), top_k (0 = off), top_p, and the row's uniform."""

    temperature: np.ndarray  # float64
    top_k: np.ndarray  # int64
    top_p: np.ndarray  # float64
    u: np.ndarray  # float64, in [0, 1)


def on_device(device: torch.device, array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(array).to(device=device, dtype=dtype)


def ranked_width(top_k: np.ndarray, vocab: int) -> int:
    """How many of a row's best tokens the filters can keep: the largest top_k when every row
    has one, else the whole vocabulary."""
    if (top_k > 0).all():
        return min(vocab, int(top_k.max()))
    return vocab


def draw_ranked(logits: torch.Tensor, f: Filters) -> torch.Tensor:
    """Each row inverts the distribution of its best tokens, in rank order, within its top_k
    and its top_p mass. Only the ranked values are computed (when every row has a top_k, only
    the largest k), and ranked before the temperature divides them (a positive temperature
    keeps the order), so the division costs k values a row, not the vocabulary."""
    device = logits.device
    k = ranked_width(f.top_k, logits.shape[-1])
    values, ids = largest(logits, k)
    top_k = np.where((f.top_k > 0) & (f.top_k < k), f.top_k, k)
    rank = torch.arange(k, device=device).expand_as(values)
    drop = rank >= on_device(device, top_k, torch.long).unsqueeze(1)
    scaled = values / on_device(device, f.temperature, torch.float32).unsqueeze(1)
    probs = torch.softmax(scaled.masked_fill_(drop, float("-inf")), dim=-1)
    # mass of the tokens strictly likelier than this one (read at the first of its ties: ties
    # at top_p's edge stay in together, as in the nucleus sampler); top_p compared in float64
    # on every path, so that all keep the same tokens
    before = probs.cumsum(dim=-1) - probs
    before = before.gather(1, _first_of_run(values))
    top_p = on_device(device, f.top_p, torch.float64).unsqueeze(1)
    drop |= (before >= top_p) & (before > 0) & (top_p < 1)
    drop[:, 0] = False  # the most likely token always stays
    chosen = invert_cdf(probs.masked_fill_(drop, 0.0), on_device(device, f.u, torch.float32))
    return _token_at(logits, values, ids, chosen.unsqueeze(1))


def _first_of_run(values: torch.Tensor) -> torch.Tensor:
    """For each place of rows sorted in descending order, where its run of equal values
    starts."""
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    places = torch.arange(values.shape[1], device=values.device).expand_as(values)
    return torch.where(starts, places, 0).cummax(dim=-1).values


def largest(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's ``k`` largest values in descending order, ties in token-id order, and
    their token ids: selected unsorted, then the k kept sorted (sorted by id first when values
    tie)."""
    if k == logits.shape[-1]:
        return logits.sort(dim=-1, descending=True, stable=True)
    values, ids = select_top(logits, k)
    values, order = values.sort(dim=-1, descending=True)
    ids = ids.gather(1, order)
    if logits.device.type == "cpu" and not bool((values[:, 1:] == values[:, :-1]).any()):
        return values, ids  # no ties to order (a host check: free on the CPU)
    ids, order = ids.sort(dim=-1)
    values, order = values.gather(1, order).sort(dim=-1, descending=True, stable=True)
    return values, ids.gather(1, order)


def select_top(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's k largest values (unsorted) and their ids. On the CPU in two rounds: the
    vocabulary is cut into groups of ``size`` tokens (strided, so a group's maximum is one
    vectorized max over ``size`` slices), the k groups with the largest maxima are taken, and
    the k largest of their tokens are the row's (a token of the top k lies in a group whose
    maximum is at least its value, and fewer than k groups can have a larger one). torch's CPU
    topk costs ~10 ns a token whatever k (nth_element over (value, index) pairs), so ranking
    k x size tokens and the maxima costs 1.4-4x less: 256 rows x 1,024, k 50: 2.3 -> 1.4 ms;
    x 128k: 70 -> 23 ms. With equal values, the ids topk keeps of a run of ties cut at the k-th
    value are arbitrary in either way; ``_token_at`` resolves them. On a GPU topk is one
    kernel."""
    grouped = group_maxima(logits, k) if logits.device.type == "cpu" else None
    if grouped is None:
        values, ids = logits.topk(k, dim=-1, sorted=False)
        return values, ids
    maxima, size = grouped
    ids = group_tokens(maxima.topk(k, dim=-1, sorted=False).indices, size, logits.shape[-1])
    values, picked = logits.gather(1, ids).topk(k, dim=-1, sorted=False)
    return values, ids.gather(1, picked)


def group_maxima(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, int] | None:
    """The first round of a selection of k: the maxima of groups of ``size`` tokens (rows x
    groups; token j of a group is j x groups past it, so a maximum is one vectorized max over
    ``size`` slices), and ``size``; None when there are fewer than k groups."""
    vocab = logits.shape[-1]
    size = 8 if vocab // 8 >= 4 * k else 4
    groups = vocab // size
    if groups < k:
        return None
    return logits[:, : groups * size].view(-1, size, groups).amax(dim=1), size


def group_tokens(chosen: torch.Tensor, size: int, vocab: int) -> torch.Tensor:
    """The second round's candidates: the tokens of the chosen groups (rows x groups chosen),
    and the last few tokens, which are in no group."""
    groups = vocab // size
    ids = (chosen.unsqueeze(-1) + groups * torch.arange(size, device=chosen.device)).flatten(1)
    if groups * size < vocab:
        tail = torch.arange(groups * size, vocab, device=chosen.device)
        ids = torch.cat([ids, tail.expand(ids.shape[0], -1)], dim=1)
    return ids


def _token_at(
    logits: torch.Tensor, values: torch.Tensor, ids: torch.Tensor, chosen: torch.Tensor
) -> torch.Tensor:
    """The token at each row's chosen rank (rows x 1). When the ranking stops inside a run of
    equal values (the last ranked value is the chosen one), topk kept an arbitrary few of the
    tied tokens; the row then takes the tie's lowest ids instead (the j-th tied rank is the j-th
    lowest id with that logit in the whole row), so which tokens make the top_k never depends
    on the kernel. On the GPU the whole rows are searched always: choosing which would take a
    host synchronisation."""
    token = ids.gather(1, chosen).squeeze(1)
    if values.shape[-1] == logits.shape[-1]:
        return token
    value = values.gather(1, chosen)
    spill = (value == values[:, -1:]).squeeze(1)
    if logits.device.type == "cpu":
        if not bool(spill.any()):
            return token
        rows = spill.nonzero().squeeze(1)
        token[rows] = _nth_equal(logits[rows], values[rows], value[rows], chosen[rows])
        return token
    return torch.where(spill, _nth_equal(logits, values, value, chosen), token)


def _nth_equal(
    logits: torch.Tensor, values: torch.Tensor, value: torch.Tensor, chosen: torch.Tensor
) -> torch.Tensor:
    """For each row, the j-th lowest token id whose logit is ``value``, j being the chosen
    rank's place among the ranked values equal to it."""
    first = (values == value).to(torch.uint8).argmax(dim=-1, keepdim=True)
    place = chosen - first
    seen = (logits == value).cumsum(dim=-1)
    return (seen > place).to(torch.uint8).argmax(dim=-1)
