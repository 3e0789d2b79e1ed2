"""The transformers engine on the CPU behind its scheduling loop: 16-bit, int8 and nf4
(bitsandbytes), per-request sampling, stop strings, streaming deltas, chunked prefill, and
continuous batching (join at the next step, leave at once, cancellation, the KV plan), also of
sliding-window and hybrid models."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from ridgeline.api import Quantization
from ridgeline_serving.engine import (
    GenerationRequest,
    SequenceEvent,
    attention,
    kv_layers,
    slot_cache,
)
from ridgeline_serving.engine.runner import TransformersRunner
from ridgeline_serving.engine.scheduler import Limits, Scheduler
from ridgeline_serving.engine.transformers_engine import TransformersEngine
from tests.serving.conftest import Listener
from tests.serving.decode_driver import ARCHITECTURES, sweep_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def engine(tiny_dir: Path) -> Iterator[TransformersEngine]:
    eng = TransformersEngine(tiny_dir, "tiny", Quantization.NONE, "float32", 0, 512)
    yield eng
    eng.close()


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
        # 136 input features are not whole 64-value blocks: bitsandbytes' packed CPU layout
        # (AVX512-BF16 CPUs) cannot hold them, so that layer keeps the plain one.
        assert eng.model.model.layers[0].mlp.down_proj.support_avx512bf16_for_cpu is False
    # embeddings and lm_head stay 16/32-bit
    assert not isinstance(eng.model.lm_head, (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit))
    # continuous batching over quantized layers: two sequences of different lengths
    out = eng.generate(
        [
            GenerationRequest(eng.encode_prompt("the model"), 6, temperature=0),
            GenerationRequest(eng.encode_prompt("a longer prompt for the ridge"), 3, temperature=0),
        ]
    )
    eng.close()
    assert [o.completion_tokens for o in out] == [6, 3]


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
        GenerationRequest(engine.encode_prompt("a"), 3, temperature=1.0, top_k=5, seed=7),
    ]
    listeners = [Listener() for _ in reqs]
    for req, listener in zip(reqs, listeners, strict=True):
        engine.submit(req, listener)
    for listener in listeners:
        assert listener.done.wait(60)
    assert [ls.events[-1].completion_tokens for ls in listeners] == [8, 5, 3]
    assert [ls.events[-1].finish for ls in listeners] == ["length"] * 3
    # alone or in a batch, greedy and seeded requests give the same text
    for req, listener in zip(reqs, listeners, strict=True):
        assert engine.generate([req])[0].text == listener.text


def test_stop_string_ends_the_sequence(engine: TransformersEngine) -> None:
    free = engine.generate([GenerationRequest(engine.encode_prompt("the"), 12, temperature=0)])[0]
    stop = free.text[3:6]
    assert stop
    cut = engine.generate(
        [GenerationRequest(engine.encode_prompt("the"), 12, temperature=0, stop=[stop])]
    )[0]
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[: free.text.find(stop)]


def test_chunked_prefill_matches_one_shot(tiny_dir: Path, engine: TransformersEngine) -> None:
    prompt = engine.encode_prompt("the model serves tokens " * 20)
    whole = engine.generate([GenerationRequest(prompt, 6, temperature=0)])[0].text
    chunked = TransformersEngine(
        tiny_dir, "tiny", Quantization.NONE, "float32", 0, 512, prefill_tokens=16
    )
    try:
        assert chunked.generate([GenerationRequest(prompt, 6, temperature=0)])[0].text == whole
    finally:
        chunked.close()


def test_a_short_request_joins_a_running_batch_and_leaves_first(
    engine: TransformersEngine,
) -> None:
    long_listeners = [Listener() for _ in range(4)]
    for i, listener in enumerate(long_listeners):
        req = GenerationRequest(engine.encode_prompt(f"long {i}"), 200, temperature=0)
        engine.submit(req, listener)
    while not all(ls.events for ls in long_listeners):  # the long ones are decoding
        threading.Event().wait(0.01)
    # it arrives at a step boundary (from the engine's own step hook), and its end is read in
    # the engine's thread too, so the count is exact
    short = Listener()
    marks: list[int] = []

    def on_short(event: SequenceEvent) -> None:
        if event.finish:
            marks.append(engine.stats().steps + 1)  # called within that step
        short(event)

    def arrive(stats: object) -> None:
        engine.scheduler.on_step = None
        marks.append(engine.stats().steps)
        engine.submit(GenerationRequest(engine.encode_prompt("short"), 4, temperature=0), on_short)

    engine.scheduler.on_step = arrive
    assert short.done.wait(60)
    # one step waiting for company (JOIN_WAIT_STEPS), one prefill step (its first token) and
    # three decode steps
    assert marks[1] - marks[0] == 1 + 1 + 3
    assert not any(ls.done.is_set() for ls in long_listeners)
    assert engine.stats().running == 4
    for listener in long_listeners:
        assert listener.done.wait(120)
    assert engine.stats().running == 0
    assert engine.stats().kv_tokens_used == 0


def test_cancelled_sequence_leaves_then_says_so_once(engine: TransformersEngine) -> None:
    listener = Listener()
    seq = engine.submit(GenerationRequest(engine.encode_prompt("x"), 400, temperature=0), listener)
    while len(listener.events) < 3:
        threading.Event().wait(0.01)
    engine.cancel(seq)
    assert listener.done.wait(30)
    # the last event comes once the sequence has left the batch (what admission counts on)
    assert engine.stats().running == 0
    seen = len(listener.events)
    threading.Event().wait(0.2)
    assert len(listener.events) == seen
    assert listener.events[-1].finish == "cancelled"
    assert [e.finish for e in listener.events[:-1]] == [None] * (seen - 1)


def test_a_sequence_cancelled_at_once_says_so_once(engine: TransformersEngine) -> None:
    listeners = [Listener() for _ in range(2)]
    ids = [
        engine.submit(GenerationRequest(engine.encode_prompt("w"), 50, temperature=0), ls)
        for ls in listeners
    ]
    engine.cancel(ids[0])  # still waiting, or in its prefill group: it leaves all the same
    assert listeners[0].done.wait(30)
    assert listeners[1].done.wait(60)
    threading.Event().wait(0.2)
    assert [e.finish for e in listeners[0].events if e.finish] == ["cancelled"]
    assert listeners[1].events[-1].finish == "length"


def test_the_batch_never_exceeds_the_planned_kv_tokens(tiny_dir: Path) -> None:
    # 40 KV tokens: room for one sequence of (prompt ~3 + 30) at a time
    eng = TransformersEngine(tiny_dir, "tiny", Quantization.NONE, "float32", 0, 512, kv_tokens=40)
    seen: list[int] = []
    eng.scheduler.on_step = lambda stats: seen.append(stats.running)
    try:
        reqs = [GenerationRequest(eng.encode_prompt(f"k{i}"), 30, temperature=0) for i in range(3)]
        out = eng.generate(reqs)
    finally:
        eng.close()
    assert [o.completion_tokens for o in out] == [30, 30, 30]
    assert max(seen) == 1


def test_logprobs_and_penalties(engine: TransformersEngine) -> None:
    prompt = engine.encode_prompt("the ridge")
    out = engine.generate([GenerationRequest(prompt, 5, temperature=0, logprobs=3)])[0]
    assert len(out.logprobs) == 5
    for entry in out.logprobs:
        assert len(entry.top) == 3
        assert entry.logprob <= 0
        # greedy: the chosen token is the most likely one
        assert entry.logprob == pytest.approx(entry.top[0][1])
    # random tiny weights give near-flat logits: a presence penalty of 2 forbids repeats
    penalized = engine.generate(
        [GenerationRequest(prompt, 24, temperature=0, presence_penalty=2.0, logprobs=0)]
    )[0]
    tokens = [e.token_id for e in penalized.logprobs]
    assert len(set(tokens)) == len(tokens)


def test_a_failing_prompt_fails_alone(engine: TransformersEngine) -> None:
    good = Listener()
    engine.submit(GenerationRequest(engine.encode_prompt("good"), 60, temperature=0), good)
    while not good.events:
        threading.Event().wait(0.01)
    bad = Listener()
    engine.submit(GenerationRequest([engine.vocab_size + 5], 4, temperature=0), bad)
    assert bad.done.wait(60)
    assert bad.events[-1].error
    assert good.done.wait(60)
    # without isolation the good sequence would end with the same error
    assert all(e.error is None for e in good.events)
    assert good.events[-1].finish in ("stop", "length")


# Sequences join a running batch in waves (a prompt longer than the running rows, so the cache
# shifts right), leave at different steps (freed slots are reused) and outlive the columns
# (unused ones are dropped, or, where the buffer is below one context per slot, it doubles).
WAVES = [
    [("a", 150), ("bb cc", 20), ("the ridge", 70)],
    [(" ".join(["a much longer prompt about the ridge"] * 5), 90), ("x y", 8)],
    [("short", 40), ("another prompt, of middling length", 120), ("z", 30)],
    [("more rows than the first slots", 50), ("and one more", 60)],
]


def run_waves(
    engine: TransformersEngine, columns: int | None = None
) -> list[tuple[list[int], int, list[int]]]:
    """Each request of ``WAVES`` through the running batch: (prompt, max tokens, greedy output
    tokens). ``columns``: a buffer narrower than the plan's, to make it grow."""
    runner = engine.scheduler.runner
    assert isinstance(runner, TransformersRunner)
    if columns is not None:
        runner.running.max_columns = columns
    saved = engine.scheduler.eos_ids
    engine.scheduler.eos_ids = set()  # random weights: every request runs to its length
    listeners: list[tuple[list[int], int, Listener]] = []
    try:
        for wave in WAVES:
            started = []
            for text, n in wave:
                listener = Listener()
                ids = engine.encode_prompt(text)
                engine.submit(GenerationRequest(ids, n, temperature=0, logprobs=0), listener)
                listeners.append((ids, n, listener))
                started.append(listener)
            while not all(ls.events for ls in started):
                threading.Event().wait(0.005)
            threading.Event().wait(0.05)  # a few steps into decoding
        for _, _, listener in listeners:
            assert listener.done.wait(120)
    finally:
        engine.scheduler.eos_ids = saved
    return [
        (ids, n, [lp.token_id for e in listener.events for lp in e.logprobs])
        for ids, n, listener in listeners
    ]


def greedy(engine: TransformersEngine, ids: list[int], n: int) -> list[int]:
    """What transformers' own ``generate`` gives the prompt alone."""
    with torch.inference_mode():
        out = engine.model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones((1, len(ids)), dtype=torch.long),
            max_new_tokens=n,
            do_sample=False,
            eos_token_id=-1,  # as the engine's: no end of sequence
            pad_token_id=engine.tokenizer.pad_token_id,
        )
    tokens: list[int] = out[0, len(ids) :].tolist()
    return tokens


def test_continuous_batching_matches_greedy_generate(tiny_dir: Path) -> None:
    """Each sequence of ``WAVES`` gets exactly the tokens ``generate`` gives its prompt, through
    buffers that are the plan's from the first request to the last: never above the plan's KV
    tokens, never reallocated, room made by dropping the columns no running row uses."""
    eng = TransformersEngine(tiny_dir, "tiny", Quantization.NONE, "float32", 0, 256, max_batch=4)
    runner = eng.scheduler.runner
    assert isinstance(runner, TransformersRunner)
    batch = runner.running
    buffers: set[int] = set()
    cells: list[int] = []
    ends: list[int] = []

    def on_step(stats: Any) -> None:
        buffers.update(id(layer.key_buffer) for layer in batch.layers[:1])
        cells.append(batch.slots * batch.columns)
        ends.append(batch.end)

    eng.scheduler.on_step = on_step
    try:
        results = run_waves(eng)
        for ids, n, got in results:
            assert got == greedy(eng, ids, n)
    finally:
        eng.close()
    assert max(cells) == eng.limits.kv_tokens == 4 * 256
    assert len(buffers) == 1
    # the columns ran out and unused ones were dropped: the next column moved back
    assert any(later < earlier - 1 for earlier, later in itertools.pairwise(ends) if later)
    assert sum(len(ids) + n for ids, n, _ in results) > 256


def test_a_buffer_below_the_context_grows_and_still_batches_exactly(tiny_dir: Path) -> None:
    """A plan below one context per slot (columns for 64 tokens, sequences of 200): the buffer
    doubles where dropping unused columns cannot make room, and the outputs stay exact."""
    eng = TransformersEngine(tiny_dir, "tiny", Quantization.NONE, "float32", 0, 512, max_batch=4)
    runner = eng.scheduler.runner
    assert isinstance(runner, TransformersRunner)
    columns: list[int] = []
    eng.scheduler.on_step = lambda stats: columns.append(runner.running.columns)
    try:
        for ids, n, got in run_waves(eng, columns=64):
            assert got == greedy(eng, ids, n)
    finally:
        eng.close()
    assert columns[0] == 64 < max(columns)


# ---- sliding-window and hybrid attention -----------------------------------------------------

WINDOW = 8  # far shorter than most prompts plus outputs of WAVES: the window changes outputs


def windowed_config(kind: str, tok: Any) -> Any:
    """A tiny config of a model family with sliding-window attention layers."""
    from transformers import Gemma2Config, Gemma3TextConfig, MistralConfig, Qwen2Config

    common: dict[str, Any] = {
        "vocab_size": len(tok),
        "hidden_size": 64,
        "intermediate_size": 136,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        "sliding_window": WINDOW,
    }
    if kind == "mistral":  # every layer slides (Mistral-7B-v0.1)
        return MistralConfig(num_hidden_layers=2, **common)
    if kind == "qwen2":  # layers from max_window_layers on slide
        return Qwen2Config(
            num_hidden_layers=2, use_sliding_window=True, max_window_layers=1, **common
        )
    if kind == "gemma2":  # sliding and full layers alternate; attention logits soft-capped
        return Gemma2Config(num_hidden_layers=2, head_dim=16, **common)
    layer_types = ["sliding_attention", "full_attention", "sliding_attention"]
    return Gemma3TextConfig(num_hidden_layers=3, head_dim=16, layer_types=layer_types, **common)


def write_windowed_model(out: Path, kind: str) -> Path:
    """Tokenizer, config and random weights of a tiny ``kind`` model (no hub)."""
    from transformers import AutoModelForCausalLM

    from ridgeline_dev.tiny_model import write_tokenizer

    tok = write_tokenizer(out)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(windowed_config(kind, tok)).save_pretrained(out)
    (out / "generation_config.json").unlink(missing_ok=True)
    return out


@contextmanager
def without_window(model: Any) -> Iterator[None]:
    """The same weights with a window wider than any sequence here: full attention."""
    saved = model.config.sliding_window
    model.config.sliding_window = 1 << 20
    try:
        yield
    finally:
        model.config.sliding_window = saved


@pytest.mark.parametrize("kind", ["mistral", "qwen2", "gemma2", "gemma3"])
def test_sliding_window_models_batch_like_generate(tmp_path: Path, kind: str) -> None:
    """Sliding-window (Mistral) and hybrid (Qwen2, Gemma-2, Gemma-3) models run ``WAVES``
    through the running batch, rows of different lengths joining it mid-way: each sequence gets
    exactly what ``generate`` gives its prompt alone (transformers' own sliding-window cache
    there), and the window changes what they get, so a batch that ignored it would fail."""
    eng = TransformersEngine(
        write_windowed_model(tmp_path / kind, kind), kind, Quantization.NONE, "float32", 0, 512
    )
    columns: list[int] = []
    runner = eng.scheduler.runner
    assert isinstance(runner, TransformersRunner)
    eng.scheduler.on_step = lambda stats: columns.append(runner.running.columns)
    narrow = 32  # a buffer narrower than the sequences: for a full layer, it must grow
    try:
        # Gemma-2's soft-capped attention logits are transformers' eager attention's to do
        softcapped = kind == "gemma2"
        assert (eng.model.config._attn_implementation == attention.NAME) is not softcapped
        results = run_waves(eng, columns=narrow)
        for ids, n, got in results:
            assert got == greedy(eng, ids, n)
        with without_window(eng.model):
            assert any(got != greedy(eng, ids, n) for ids, n, got in results)
    finally:
        eng.close()
    widest = max(len(ids) for ids, _, _ in results)
    longest = max(len(ids) + n for ids, n, _ in results)
    if kind == "mistral":  # every layer slides: the columns behind the window are dropped, so
        # the buffer never outgrows the widest prompt (and the headroom), however long the outputs
        assert max(columns) <= max(narrow, widest + slot_cache.HEADROOM_COLUMNS) < longest
    else:  # a full-attention layer keeps every token of the longest sequence but its last
        assert max(columns) >= longest - 1


def test_a_model_the_batch_cannot_hold_fails_at_load(tmp_path: Path) -> None:
    """Chunked attention (Llama 4) is refused when the engine is built, naming the model type
    and the config field, not at its first request."""
    from transformers import Llama4TextConfig

    from ridgeline_dev.tiny_model import write_tokenizer

    write_tokenizer(tmp_path)
    Llama4TextConfig(num_hidden_layers=2, attention_chunk_size=16).save_pretrained(tmp_path)
    with pytest.raises(kv_layers.UnbatchableModelError) as info:
        TransformersEngine(tmp_path, "llama4", Quantization.NONE, "float32", 0, 512)
    assert "llama4_text" in str(info.value)
    assert "layer_types[0]='chunked_attention'" in str(info.value)


class PaddedRunner:
    """A model whose embedding is padded past its tokenizer, and whose padding rows win every
    step (untrained rows can: nothing pushed them down)."""

    device = torch.device("cpu")

    def __init__(self, tokens: int, padding: int = 64) -> None:
        self.logits = torch.zeros(8, tokens + padding)
        self.logits[:, :tokens] = torch.linspace(0, 1, tokens)
        self.logits[:, tokens:] = 10.0

    def start(self, prompts: list[list[int]]) -> Any:
        logits = self.logits[: len(prompts)]

        class Job:
            rows = len(prompts)

            def step(self, budget: int) -> tuple[int, torch.Tensor]:
                return sum(map(len, prompts)), logits

        return Job()

    def join(self, group: Any) -> None:
        pass

    def decode(self, tokens: list[int]) -> torch.Tensor:
        return self.logits[: len(tokens)]

    def keep(self, rows: list[int]) -> None:
        pass


def test_ids_past_the_tokenizer_are_never_drawn(engine: TransformersEngine) -> None:
    tokens = len(engine.tokenizer)
    limits = Limits(max_batch=8, kv_tokens=8 * 64, prefill_tokens=64, max_context_tokens=64)
    scheduler = Scheduler(PaddedRunner(tokens), engine.tokenizer, set(), limits)
    try:
        requests = [
            GenerationRequest([5, 6], 12, temperature=0, logprobs=2),
            GenerationRequest([5, 6], 12, temperature=1.0, logprobs=2),
            GenerationRequest([5, 6], 12, temperature=1.0, top_p=0.5, logprobs=2),
            GenerationRequest([5, 6], 12, temperature=1.0, top_k=3, seed=1, logprobs=2),
        ]
        results = scheduler.generate(requests)
    finally:
        scheduler.close()
    for result in results:
        drawn = [lp.token_id for lp in result.logprobs]
        assert len(drawn) == 12
        assert max(drawn) < tokens
        # the alternatives too are tokens (a padding id decodes to nothing)
        assert all(piece for lp in result.logprobs for piece, _ in lp.top)


# ---- architectures -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_architectures_batch_like_generate(tmp_path: Path, tiny_dir: Path, kind: str) -> None:
    """Tiny random models of each family load (Falcon keeps its own attention classes, which
    take no registered function) and batch exactly: rows of different lengths join a running
    batch and leave it first, and each gets what ``generate`` gives its prompt alone."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / kind
    shutil.copytree(tiny_dir, out, ignore=shutil.ignore_patterns("*.safetensors", "*config.json"))
    (out / "tokenizer_config.json").write_text((tiny_dir / "tokenizer_config.json").read_text())
    torch.manual_seed(0)
    config = sweep_config(kind, AutoTokenizer.from_pretrained(tiny_dir))
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    eng = TransformersEngine(out, kind, Quantization.NONE, "float32", 0, 256, max_batch=4)
    saved = eng.scheduler.eos_ids
    eng.scheduler.eos_ids = set()
    try:
        first = [(eng.encode_prompt("the ridge model serves"), 14), (eng.encode_prompt("a"), 4)]
        listeners = []
        for ids, n in first:
            listeners.append(Listener())
            eng.submit(GenerationRequest(ids, n, temperature=0, logprobs=0), listeners[-1])
        while not all(ls.events for ls in listeners):
            threading.Event().wait(0.005)
        late = (eng.encode_prompt("tokens of the roofline and the memory bandwidth"), 6)
        listeners.append(Listener())
        eng.submit(GenerationRequest(late[0], late[1], temperature=0, logprobs=0), listeners[-1])
        for listener in listeners:
            assert listener.done.wait(60)
        for (ids, n), listener in zip([*first, late], listeners, strict=True):
            got = [lp.token_id for e in listener.events for lp in e.logprobs]
            assert got == greedy(eng, ids, n)
    finally:
        eng.scheduler.eos_ids = saved
        eng.close()
