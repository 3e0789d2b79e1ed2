"""The static decode step (what a CUDA replica captures as graphs), checked on the CPU: it
compiles whole under ``torch.compile(fullgraph=True, dynamic=False)`` (a graph break is what a
host sync or a data-dependent shape would be under capture), recompiles once per bucket it
meets, and its greedy tokens are the eager step's, through joins, leaves, compaction and
sliding windows."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from ridgeline_serving.engine import attention
from ridgeline_serving.engine.static_step import bucket, column_buckets, row_buckets
from tests.serving.decode_driver import (
    ARCHITECTURES,
    VOCAB,
    Driver,
    runner,
    sweep_config,
    tiny_model,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_buckets() -> None:
    assert row_buckets(64) == [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]
    assert row_buckets(3) == [1, 2, 3]
    assert row_buckets(1) == [1]
    assert row_buckets(20) == [1, 2, 4, 8, 16, 20]
    assert column_buckets(600, 256) == [256, 512, 600]
    assert column_buckets(512, 256) == [256, 512]
    assert bucket(17, row_buckets(64)) == 24
    assert bucket(65, row_buckets(64)) is None


@pytest.mark.parametrize("kind", ["llama", "qwen2", "mistral"])
def test_the_static_step_compiles_whole_and_decodes_as_eager(kind: str) -> None:
    """200 steps of joins (a wider prompt shifting the columns), leaves (freed slots reused,
    rows out of slot order), KV growing to the context and compacted: one compile per bucket
    met, none of them with a graph break, and the same greedy tokens as the eager step."""
    model = tiny_model(kind)
    counter = CompileCounter()
    static = runner(model, "compiled", counter)
    eager = runner(model, "eager")
    assert static.mode == "compiled"
    assert static.static is not None
    seen: set[tuple[int, int]] = set()
    ends: list[int] = []
    unordered = False
    prepare = static.static.prepare

    def watch(tokens: torch.Tensor) -> tuple[int, int] | None:
        step = prepare(tokens)
        assert step is not None
        seen.add(step)
        return step

    static.static.prepare = watch  # type: ignore[method-assign]
    drivers = [Driver(static), Driver(eager)]
    with torch._dynamo.config.patch(recompile_limit=64):
        for number in range(200):
            for driver in drivers:
                driver.step(number)
            assert drivers[0].tokens == drivers[1].tokens, f"step {number}"
            ends.append(static.running.end)
            unordered |= static.running.slot_index() is not None
    torch._dynamo.reset()
    assert static.mode == "compiled"  # never fell back to eager
    assert counter.frame_count == len(seen)  # a compile per bucket met, and no more
    assert len(seen) >= 5
    assert unordered  # rows ran out of slot order
    assert any(later < earlier for earlier, later in itertools.pairwise(ends) if later)
    assert sum(map(len, drivers[0].steps)) > 250


def test_a_model_that_cannot_run_static_stays_eager(caplog: pytest.LogCaptureFixture) -> None:
    """Eager attention (a float mask it builds itself): the runner says why, once, and decodes
    eager; a static step that fails at run time turns the runner eager, not the replica off."""
    model = tiny_model("llama")
    model.config._attn_implementation = "eager"
    with caplog.at_level(logging.INFO, logger="ridgeline.engine"):
        plain = runner(model, "compiled")
    assert plain.mode == "eager"
    assert plain.static is None
    assert "attention 'eager'" in caplog.text
    model.config._attn_implementation = attention.NAME

    def broken(gm: Any, inputs: Any) -> Any:
        raise RuntimeError("no capture today")

    failing, eager = runner(model, "compiled", broken), runner(model, "eager")
    drivers = [Driver(failing), Driver(eager)]
    with caplog.at_level(logging.WARNING, logger="ridgeline.engine"):
        for number in range(12):
            for driver in drivers:
                driver.step(number)
            assert drivers[0].tokens == drivers[1].tokens
    torch._dynamo.reset()
    assert failing.mode == "eager"
    assert caplog.text.count("decode steps run eager from now on") == 1
    # graphs are for CUDA devices only
    assert runner(model, "auto").mode == "eager"
    assert runner(model, "graphs").mode == "eager"


class SweepTokens:
    """What ``sweep_config`` reads of a tokenizer."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __len__(self) -> int:
        return VOCAB


@pytest.mark.parametrize(
    "kind", [k for k in ARCHITECTURES if k not in ("llama", "qwen2", "mistral")]
)
def test_each_architecture_compiles_whole_or_stays_eager(kind: str) -> None:
    """The other families of the engine's sweep: the dense ones and Mixtral (its experts
    routed without a host sync) compile whole, a bucket at a time, with the eager step's
    tokens; Falcon (its own attention classes and ALiBi mask) and Gemma-2 (eager attention, for
    its soft-capping) are known before the first step to stay eager."""
    from transformers import AutoModelForCausalLM

    config = sweep_config(kind, SweepTokens())
    torch.manual_seed(0)
    name = attention.register() if attention.handles(config) else None
    model = AutoModelForCausalLM.from_config(config, attn_implementation=name).eval()
    counter = CompileCounter()
    static, eager = runner(model, "compiled", counter), runner(model, "eager")
    drivers = [Driver(static), Driver(eager)]
    with torch._dynamo.config.patch(recompile_limit=64):
        for number in range(8):
            for driver in drivers:
                driver.step(number)
            assert drivers[0].tokens == drivers[1].tokens, f"step {number}"
    torch._dynamo.reset()
    if kind in ("falcon", "gemma2"):
        assert static.mode == "eager"
        assert counter.frame_count == 0
    else:
        assert static.mode == "compiled"
        assert counter.frame_count == 2  # 2 rows, then 3 in the 4-row bucket


def test_llm_int8_stays_eager(tiny_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """LLM.int8 finds its outlier columns on the host (outliers.any(), argwhere): no static
    step, and the log says so."""
    from ridgeline.api import Quantization
    from ridgeline_serving.engine.transformers_engine import TransformersEngine

    engine = TransformersEngine(tiny_dir, "tiny", Quantization.INT8, "float32", 0, 256)
    engine.close()
    with caplog.at_level(logging.INFO, logger="ridgeline.engine"):
        int8 = runner(engine.model, "compiled")
    assert int8.mode == "eager"
    assert "LLM.int8 with an outlier threshold" in caplog.text
