"""Stop strings in the streaming detokenizer: the same text as vLLM's check (a match that ends
in a token's new text, the earliest-starting one), across token boundaries and with min_tokens,
and work per token that does not grow with the output or the stops' length."""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from ridgeline_serving.engine.detokenize import Detokenizer
from ridgeline_serving.engine.stops import StopMatcher

TEXT = "the model serves the ridge; the ridge serves the model, and tokens serve them all. " * 3


@pytest.fixture(scope="module")
def tok(tiny_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


def stream(tok: Any, ids: list[int], stops: list[str], min_tokens: int = 0) -> tuple[str, bool]:
    """What the detokenizer emits, token by token, and whether a stop string ended it."""
    detok = Detokenizer(tok, stops)
    out = ""
    for n, token in enumerate(ids, start=1):
        delta, hit = detok.add(token, n == len(ids), n > min_tokens)
        out += delta
        if hit:
            return out, True
    return out, False


def expected(pieces: list[str], stops: list[str], min_tokens: int) -> tuple[str, bool]:
    """vLLM's check, on the whole text each step: the earliest-starting stop string that ends
    in the new text, once past min_tokens."""
    text = ""
    for n, piece in enumerate(pieces, start=1):
        before, text = len(text), text + piece
        if n <= min_tokens:
            continue
        found = [i for s in stops if (i := text.find(s, max(before - len(s) + 1, 0))) >= 0]
        if found:
            return text[: min(found)], True
    return text, False


def random_stops(rng: random.Random, text: str) -> list[str]:
    """Up to 4 stops: pieces of the text (most span token boundaries), a piece and its own
    beginning or end (nested matches), and one that never occurs."""
    stops = []
    for _ in range(rng.randint(1, 3)):
        start = rng.randrange(len(text) - 12)
        stops.append(text[start : start + rng.randint(1, 12)])
    kind = rng.choice(["prefix", "suffix", "absent"])
    base = stops[0]
    if kind == "prefix" and len(base) > 1:
        stops.append(base[: rng.randint(1, len(base) - 1)])
    elif kind == "suffix" and len(base) > 1:
        stops.append(base[rng.randint(1, len(base) - 1) :])
    else:
        stops.append(base + "#")
    return stops


@pytest.mark.parametrize("min_tokens", [0, 5])
def test_stop_strings_end_the_text_where_vllms_check_does(tok: Any, min_tokens: int) -> None:
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    free = Detokenizer(tok, [])
    pieces = [free.add(t, i == len(ids) - 1)[0] for i, t in enumerate(ids)]
    assert "".join(pieces) == TEXT
    assert len(ids) < len(TEXT) / 2  # most tokens hold several characters
    rng = random.Random(0)
    hits = 0
    for _ in range(300):
        stops = random_stops(rng, TEXT)
        got = stream(tok, ids, stops, min_tokens)
        assert got == expected(pieces, stops, min_tokens), stops
        hits += got[1]
    assert hits > 250  # nearly every case ends at a stop string


def test_min_tokens_ignores_a_stop_string_that_ends_before_them(tok: Any) -> None:
    ids = tok("the ridge serves the model", add_special_tokens=False)["input_ids"]
    assert stream(tok, ids, ["ridge"]) == ("the ", True)
    ridge_ends = next(n for n in range(1, len(ids)) if "ridge" in tok.decode(ids[:n]))
    # the only "ridge" ends within min_tokens: it does not count, and the text runs to its end
    assert stream(tok, ids, ["ridge"], ridge_ends) == ("the ridge serves the model", False)
    assert stream(tok, ids, ["ridge", "model"], ridge_ends) == ("the ridge serves the ", True)


@contextmanager
def counted_lines(counts: list[int]) -> Iterator[None]:
    """Count the lines of the detokenizer's and the stop matcher's code that run (what a
    token costs, counted rather than timed)."""
    files = ("detokenize.py", "stops.py")

    def local(frame: FrameType, event: str, arg: object) -> Any:
        if event == "line":
            counts[0] += 1
        return local

    def call(frame: FrameType, event: str, arg: object) -> Any:
        return local if frame.f_code.co_filename.endswith(files) else None

    sys.settrace(call)
    try:
        yield
    finally:
        sys.settrace(None)


def test_the_work_per_token_does_not_grow_with_the_output(tok: Any) -> None:
    unit = "the ridge serves tokens, and the model serves the ridge. "
    ids = tok(unit * 40, add_special_tokens=False)["input_ids"]
    period = len(tok(unit * 3)["input_ids"]) - len(tok(unit * 2)["input_ids"])
    assert ids[period : 2 * period] == ids[2 * period : 3 * period]  # the same tokens repeat
    # 4 stops of ~1,000 characters: two the text keeps beginning (held back, then never
    # completed), two that start like the text and never go on
    stops = ["t" + "#" * 998, "r" + "!" * 998] + [(unit * 20)[k : k + 999] + "#" for k in (0, 4)]
    detok = Detokenizer(tok, stops)
    per_period = []
    for start in range(0, len(ids) - period, period):
        counts = [0]
        with counted_lines(counts):
            hits = [detok.add(token, False)[1] for token in ids[start : start + period]]
        assert not any(hits)
        per_period.append(counts[0])
    # the same tokens cost the same whether 60 or 2,000 characters came before
    assert max(per_period[3:]) <= per_period[2] * 1.1


def test_the_matcher_scans_each_character_once_per_stop() -> None:
    stops = ["a" * 999 + "b", "ab" * 500]
    matcher = StopMatcher(stops)
    text = "a" * 5000
    for i in range(0, len(text), 4):
        assert matcher.feed(text[i : i + 4]) is None
    assert matcher.scanned == len(text) * len(stops)
    assert matcher.pending == 999
    assert matcher.feed("b") == 5000 - 999
