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
