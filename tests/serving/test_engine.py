"""The transformers engine on the CPU: 16-bit, int8 and nf4 (bitsandbytes), per-request
sampling, stop strings, streaming deltas, chunked prefill."""

from __future__ import annotations

from pathlib import Path

import pytest

from ridgeline.api import Quantization
from ridgeline_serving.engine import GenerationRequest
from ridgeline_serving.engine.transformers_engine import TransformersEngine


@pytest.fixture(scope="module")
def engine(tiny_dir: Path) -> TransformersEngine:
    return TransformersEngine(tiny_dir, "tiny", Quantization.NONE, "float32", 0, 512)


@pytest.mark.parametrize("quantization", [Quantization.INT8, Quantization.NF4])
def test_bitsandbytes_loads_and_generates_on_cpu(
    tiny_dir: Path, quantization: Quantization
) -> None:
    import bitsandbytes as bnb

    eng = TransformersEngine(tiny_dir, "tiny", quantization, "float32", 0, 512)
    linear = eng.model.model.layers[0].self_attn.q_proj
    expected = bnb.nn.Linear8bitLt if quantization is Quantization.INT8 else bnb.nn.Linear4bit
    assert isinstance(linear, expected)
    if quantization is Quantization.NF4:
        state = linear.weight.quant_state
        assert state.quant_type == "nf4"
        assert state.nested  # double quantization
    # embeddings and lm_head stay 16/32-bit
    assert not isinstance(eng.model.lm_head, (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit))
    out = eng.generate([GenerationRequest(eng.encode_prompt("the model"), 6, temperature=0)])
    assert out[0].completion_tokens == 6


def test_batch_mixes_sampling_params_and_streams_deltas(engine: TransformersEngine) -> None:
    reqs = [
        GenerationRequest(engine.encode_prompt("the ridge"), 8, temperature=0),
        GenerationRequest(
            engine.encode_chat([{"role": "user", "content": "hello"}]),
            5,
            temperature=0.9,
            top_p=0.8,
            seed=3,
        ),
        GenerationRequest(engine.encode_prompt("a"), 3, temperature=1.0, seed=7),
    ]
    deltas: dict[int, list[str]] = {0: [], 1: [], 2: []}
    finishes: dict[int, str] = {}

    def on_step(i: int, delta: str, finish: str | None) -> None:
        deltas[i].append(delta)
        if finish:
            finishes[i] = finish

    results = engine.generate(reqs, on_step)
    assert [r.completion_tokens for r in results] == [8, 5, 3]
    assert finishes == {0: "length", 1: "length", 2: "length"}
    for i, result in enumerate(results):
        assert "".join(deltas[i]) == result.text
    # alone or in a batch, greedy and seeded requests give the same text
    assert engine.generate([reqs[0]])[0].text == results[0].text
    assert engine.generate([reqs[1]])[0].text == results[1].text


def test_stop_string_ends_the_sequence(engine: TransformersEngine) -> None:
    free = engine.generate([GenerationRequest(engine.encode_prompt("the"), 12, temperature=0)])[0]
    stop = free.text[3:6]
    assert stop
    cut = engine.generate(
        [GenerationRequest(engine.encode_prompt("the"), 12, temperature=0, stop=[stop])]
    )[0]
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[: free.text.find(stop)]


def test_chunked_prefill_matches_one_shot(
    engine: TransformersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = engine.encode_prompt("the model serves tokens " * 20)
    whole = engine.generate([GenerationRequest(prompt, 6, temperature=0)])[0].text
    import ridgeline_serving.engine.transformers_engine as mod

    monkeypatch.setattr(mod, "PREFILL_CHUNK_TOKENS", 7)
    assert engine.generate([GenerationRequest(prompt, 6, temperature=0)])[0].text == whole
