"""One row's sampling parameters in the engine: values a batch cannot hold fail their row
only, and vLLM's extensions (ignore_eos, min_tokens, repetition_penalty) hold per row, seeded
rows giving the same tokens alone or in any batch. On the tiny model, and on a copy of it
whose end-of-sequence token is one that greedy decoding reaches at its third step."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from ridgeline.api import Quantization
from ridgeline_serving.engine import GenerationRequest, sampling
from ridgeline_serving.engine.transformers_engine import TransformersEngine
from tests.serving.conftest import Listener

MAX = 24
PROMPT = "the ridge"

pytestmark = pytest.mark.usefixtures("one_thread")


def load(model_dir: Path) -> TransformersEngine:
    return TransformersEngine(model_dir, "tiny", Quantization.NONE, "float32", 0, 512)


@pytest.fixture(scope="module")
def engine(tiny_dir: Path) -> Iterator[TransformersEngine]:
    eng = load(tiny_dir)
    yield eng
    eng.close()


def token_ids(engine: TransformersEngine, request: GenerationRequest) -> list[int]:
    with_ids = dataclasses.replace(request, logprobs=0)
    return [lp.token_id for lp in engine.generate([with_ids])[0].logprobs]


@pytest.fixture(scope="module")
def early_eos(
    tiny_dir: Path, engine: TransformersEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TransformersEngine, list[int], int]]:
    """The tiny model with, as its end-of-sequence token, the first token greedy decoding of
    PROMPT draws at its third step or later that it did not draw before; the greedy tokens; the
    step."""
    greedy = token_ids(engine, GenerationRequest(engine.encode_prompt(PROMPT), MAX, temperature=0))
    step = next(i for i in range(2, MAX) if greedy[i] not in greedy[:i])
    copy = shutil.copytree(tiny_dir, tmp_path_factory.mktemp("early-eos") / "tiny-chat")
    config = json.loads((copy / "config.json").read_text())
    config["eos_token_id"] = greedy[step]
    (copy / "config.json").write_text(json.dumps(config))
    eng = load(copy)
    assert eng.eos_ids == {greedy[step]}
    yield eng, greedy, step
    eng.close()


def together(engine: TransformersEngine, requests: list[GenerationRequest]) -> list[Listener]:
    """Submit every request at once (they share the engine's steps), wait for all."""
    listeners = [Listener() for _ in requests]
    for request, listener in zip(requests, listeners, strict=True):
        engine.submit(request, listener)
    for listener in listeners:
        assert listener.done.wait(120)
    return listeners


def mates(engine: TransformersEngine) -> list[GenerationRequest]:
    prompt = engine.encode_prompt(PROMPT)
    return [
        GenerationRequest(prompt, 16, temperature=0),
        GenerationRequest(prompt, 16, temperature=0.9, top_p=0.8, seed=3),
        GenerationRequest(prompt, 16, temperature=1.0, top_k=5, seed=7),
    ]


def assert_unharmed(
    engine: TransformersEngine, requests: list[GenerationRequest], got: list[Listener]
) -> None:
    for request, listener in zip(requests, got, strict=True):
        assert listener.error is None
        assert listener.text == engine.generate([request])[0].text


def test_a_top_k_past_the_vocabulary_is_the_vocabulary(engine: TransformersEngine) -> None:
    prompt = engine.encode_prompt("a")
    absurd = GenerationRequest(prompt, 16, temperature=1.0, top_k=10**30, seed=11)
    requests = [*mates(engine), absurd]
    got = together(engine, requests)
    # without the clamp, 10**30 overflowed the batch's int64 array and failed every row
    assert_unharmed(engine, requests[:-1], got[:-1])
    assert got[-1].error is None
    off = GenerationRequest(prompt, 16, temperature=1.0, top_k=0, seed=11)
    assert got[-1].text == engine.generate([off])[0].text


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("temperature", math.nan),
        ("temperature", -1.0),
        ("top_p", 2.0),
        ("top_p", math.inf),
        ("repetition_penalty", 0.0),
        ("presence_penalty", math.nan),
        ("frequency_penalty", 10**400),
        ("top_k", 2.5),
        ("min_tokens", -1),
        ("logprobs", -1),
    ],
    ids=lambda value: str(value)[:12],
)
def test_parameters_no_row_can_sample_with_fail_their_row_alone(
    engine: TransformersEngine, param: str, value: Any
) -> None:
    bad = GenerationRequest(engine.encode_prompt("a"), 16, **{param: value})
    requests = [*mates(engine), bad]
    got = together(engine, requests)
    assert_unharmed(engine, requests[:-1], got[:-1])
    assert got[-1].error is not None
    assert got[-1].error.startswith(f"invalid sampling parameters: {param} ")
    assert got[-1].events[-1].completion_tokens == 0


def test_a_row_whose_sampling_fails_fails_alone(
    engine: TransformersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sampling.sample

    def failing(logits: torch.Tensor, rows: list[sampling.RowParams]) -> sampling.Sampled:
        if any(r.seed == 666 for r in rows):
            raise RuntimeError("row 666 cannot be sampled")
        return real(logits, rows)

    monkeypatch.setattr(sampling, "sample", failing)
    bad = GenerationRequest(engine.encode_prompt("a"), 16, temperature=1.0, seed=666)
    requests = [*mates(engine), bad]
    got = together(engine, requests)
    assert_unharmed(engine, requests[:-1], got[:-1])
    assert got[-1].error == "sampling failed: RuntimeError: row 666 cannot be sampled"


def test_the_copy_reaches_its_end_of_sequence_early(
    early_eos: tuple[TransformersEngine, list[int], int],
) -> None:
    eng, _, step = early_eos
    out = eng.generate([GenerationRequest(eng.encode_prompt(PROMPT), MAX, temperature=0)])[0]
    assert (out.completion_tokens, out.finish_reason) == (step, "stop")


def test_ignore_eos_generates_exactly_max_tokens(
    early_eos: tuple[TransformersEngine, list[int], int],
) -> None:
    eng, greedy, _ = early_eos
    prompt = eng.encode_prompt(PROMPT)
    request = GenerationRequest(prompt, MAX, temperature=0, ignore_eos=True)
    # the end-of-sequence token is output like any other: the greedy tokens of the model
    assert token_ids(eng, request) == greedy
    sampled = [
        GenerationRequest(prompt, n, temperature=1.5, seed=seed, ignore_eos=True)
        for seed, n in enumerate([1, 7, MAX, MAX, 40])
    ]
    lengths = [(r.completion_tokens, r.finish_reason) for r in eng.generate(sampled)]
    assert lengths == [
        (1, "length"),
        (7, "length"),
        (MAX, "length"),
        (MAX, "length"),
        (40, "length"),
    ]


def test_min_tokens_holds_off_the_end_of_sequence(
    early_eos: tuple[TransformersEngine, list[int], int],
) -> None:
    eng, greedy, step = early_eos
    prompt = eng.encode_prompt(PROMPT)
    eos = greedy[step]
    for min_tokens in (step + 1, 10):
        ids = token_ids(eng, GenerationRequest(prompt, MAX, temperature=0, min_tokens=min_tokens))
        assert len(ids) >= min_tokens
        assert eos not in ids
        # until the end of sequence was due, the tokens are greedy's; then its second choice
        assert ids[:step] == greedy[:step]
    # a min_tokens past max_tokens ends at max_tokens
    capped = eng.generate([GenerationRequest(prompt, 5, temperature=0, min_tokens=50)])[0]
    assert (capped.completion_tokens, capped.finish_reason) == (5, "length")


def test_seeded_rows_with_the_extensions_do_not_depend_on_their_batch(
    early_eos: tuple[TransformersEngine, list[int], int],
) -> None:
    eng = early_eos[0]
    prompt = eng.encode_prompt(PROMPT)
    requests = [
        GenerationRequest(prompt, 20, temperature=0, repetition_penalty=1.8, ignore_eos=True),
        GenerationRequest(prompt, 20, temperature=1.0, seed=1, ignore_eos=True),
        GenerationRequest(prompt, 20, temperature=1.0, seed=2, min_tokens=12, top_k=8),
        GenerationRequest(prompt, 20, temperature=0.8, seed=3, repetition_penalty=1.3, top_p=0.9),
        GenerationRequest(
            prompt, 20, temperature=1.0, seed=4, repetition_penalty=0.7, presence_penalty=0.5
        ),
        GenerationRequest(prompt, 20, temperature=0, ignore_eos=True),
    ]
    got = together(eng, requests)
    for request, listener in zip(requests, got, strict=True):
        alone = eng.generate([request])[0]
        assert listener.error is None
        assert (listener.text, listener.events[-1].completion_tokens) == (
            alone.text,
            alone.completion_tokens,
        )
    # the repetition penalty changed greedy's choices
    assert got[0].text != got[-1].text
