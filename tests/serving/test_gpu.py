"""The CUDA paths of the engine (bf16/fp16, LLM.int8 and NF4 kernels of bitsandbytes, the
layer split over several GPUs). Marked `gpu`: they run where a CUDA device exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from ridgeline.api import Quantization
from ridgeline_serving.engine import GenerationRequest
from ridgeline_serving.engine.transformers_engine import TransformersEngine

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("quantization", list(Quantization))
def test_engine_generates_on_cuda(tiny_dir: Path, quantization: Quantization) -> None:
    import torch

    dtype = "bfloat16" if torch.cuda.get_device_capability(0) >= (8, 0) else "float16"
    engine = TransformersEngine(tiny_dir, "tiny", quantization, dtype, 1, 512)
    assert engine.device.type == "cuda"
    reqs = [
        GenerationRequest(engine.encode_prompt("the model"), 8, temperature=0) for _ in range(4)
    ]
    out = engine.generate(reqs)
    assert [r.completion_tokens for r in out] == [8] * 4
    assert len({r.text for r in out}) == 1  # the same greedy prompt gives the same text in a batch


def test_layer_split_over_all_gpus(tiny_dir: Path) -> None:
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip(f"a layer split needs 2 GPUs; this machine has {torch.cuda.device_count()}")
    engine = TransformersEngine(tiny_dir, "tiny", Quantization.NONE, "bfloat16", 2, 512)
    devices = {p.device.index for p in engine.model.parameters()}
    assert len(devices) == 2
    assert (
        engine.generate([GenerationRequest(engine.encode_prompt("a"), 4, temperature=0)])[
            0
        ].completion_tokens
        == 4
    )


def compute_dtype() -> str:
    import torch

    return "bfloat16" if torch.cuda.get_device_capability(0) >= (8, 0) else "float16"


@pytest.mark.parametrize("quantization", [Quantization.NONE, Quantization.NF4])
def test_captured_decode_gives_the_static_steps_tokens(
    tiny_dir: Path, quantization: Quantization
) -> None:
    """A CUDA replica decodes through captured graphs; replayed, they give exactly the tokens of
    the same static step run as is (the same kernels), through joins, leaves and compaction, and
    logits within 16-bit rounding of the eager step's (teacher-forced: the same inputs)."""
    import torch

    from tests.serving.decode_driver import Driver, runner

    engine = TransformersEngine(tiny_dir, "tiny", quantization, compute_dtype(), 1, 512)
    engine.close()  # its model is what the runners below run
    assert engine.scheduler.runner.mode == "graphs"  # type: ignore[attr-defined]
    graphs, static, eager = (Driver(runner(engine.model, m)) for m in ("graphs", "static", "eager"))
    followed = Driver(runner(engine.model, "graphs"))
    for number in range(200):
        for driver in (graphs, static, eager, followed):
            driver.step(number)
        assert graphs.tokens == static.tokens, f"step {number}"
        if followed.logits is not None:
            assert eager.logits is not None
            torch.testing.assert_close(followed.logits, eager.logits, atol=5e-2, rtol=5e-2)
        followed.tokens = list(eager.tokens)  # the same inputs next step
    assert graphs.runner.mode == "graphs"
    captured = graphs.runner._graphs
    assert captured is not None
    assert captured.captures >= 4  # several buckets, each captured once
    assert len(captured.graphs) == captured.captures


def test_int8_decodes_eager_and_says_why(tiny_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """LLM.int8's outlier columns are found on the host (a sync a graph cannot hold)."""
    import logging

    with caplog.at_level(logging.INFO, logger="ridgeline.engine"):
        engine = TransformersEngine(tiny_dir, "tiny", Quantization.INT8, compute_dtype(), 1, 512)
    try:
        assert engine.scheduler.runner.mode == "eager"  # type: ignore[attr-defined]
        assert "LLM.int8" in caplog.text
        out = engine.generate([GenerationRequest(engine.encode_prompt("a"), 4, temperature=0)])
        assert out[0].completion_tokens == 4
    finally:
        engine.close()
