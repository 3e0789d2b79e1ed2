"""A sequence's sampling parameters, and their check when it joins the engine: one row's
parameters that a batch's arrays cannot hold must fail that row, not every row beside it."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np


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
    repetition_penalty: float = 1.0
    min_tokens: int = 0  # no id of eos_ids is drawn before the row has this many tokens
    eos_ids: tuple[int, ...] = ()
    # counted by the repetition penalty, with the output (an array: converted once, not per step)
    prompt_ids: Sequence[int] | np.ndarray = ()


def checked(params: RowParams, vocab: int) -> RowParams:
    """``params`` as a batch's arrays hold them: a top_k or logprobs past the vocabulary is the
    vocabulary (a top_k of it, or of 0 or less, is off). A value no row can be sampled with
    raises ValueError naming it, so that its row fails alone rather than its whole batch."""
    _check_number("temperature", params.temperature, 0.0, math.inf)
    _check_number("top_p", params.top_p, 0.0, 1.0)
    _check_number("presence_penalty", params.presence_penalty, -math.inf, math.inf)
    _check_number("frequency_penalty", params.frequency_penalty, -math.inf, math.inf)
    _check_number("repetition_penalty", params.repetition_penalty, 0.0, math.inf)
    if params.repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty must be positive, not {params.repetition_penalty}")
    for name in ("top_k", "min_tokens", "seed"):
        if not _is_int(getattr(params, name)):
            raise ValueError(f"{name} must be an integer, not {getattr(params, name)!r}")
    if params.min_tokens < 0:
        raise ValueError(f"min_tokens must not be negative, not {params.min_tokens}")
    if params.logprobs is not None and not (_is_int(params.logprobs) and params.logprobs >= 0):
        raise ValueError(f"logprobs must be a non-negative integer, not {params.logprobs!r}")
    top_k = params.top_k if 0 < params.top_k < vocab else 0
    logprobs = None if params.logprobs is None else min(params.logprobs, vocab)
    return replace(params, top_k=top_k, logprobs=logprobs)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_number(name: str, value: object, low: float, high: float) -> None:
    number = math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):  # an int past the float range
            number = float(value)
    if not (math.isfinite(number) and low <= number <= high):  # NaN fails too
        raise ValueError(f"{name} must be a finite number in [{low}, {high}], not {value!r}")
