"""Measured decode sweeps the step model is checked against, as data, each with its source.

``ridgeline plan --plot`` draws the points of a sweep whose GPU, quantization, engine and model
size match the plan; tests/unit/test_published_numbers.py holds the step model to each point.
Ridgeline's own GPU runs (``make bench`` on a GPU, docs/benchmarks.md) join this table when a
GPU machine has produced them; none has yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from ridgeline.api.inference_model import Quantization
from ridgeline.planner.step_model import Engine


@dataclass(frozen=True)
class MeasuredSweep:
    model: str
    num_params: int
    accelerator: str  # hardware.Accelerator.name
    engine: Engine
    quantization: Quantization
    prompt_tokens: int
    output_tokens: int
    # (batch, milliseconds per output token), averaged over the generation.
    points: tuple[tuple[int, float], ...]
    source: str

    @property
    def context_tokens(self) -> float:
        """A static batch: every row starts together, so a step reads on average the prompt
        plus half the output."""
        return self.prompt_tokens + self.output_tokens / 2

    def matches(self, num_params: int, accelerator: str, engine: Engine, q: Quantization) -> bool:
        """Same GPU, engine and weight format, and a model within 2% of the size."""
        return (self.accelerator, self.engine, self.quantization) == (
            accelerator,
            engine,
            q,
        ) and abs(num_params / self.num_params - 1) <= 0.02


MEASURED: tuple[MeasuredSweep, ...] = (
    MeasuredSweep(
        model="Llama-2-13B",
        num_params=13_015_864_320,
        accelerator="A100-80GB-SXM4",
        engine=Engine.TRANSFORMERS,
        quantization=Quantization.NONE,
        prompt_tokens=512,
        output_tokens=512,
        points=((1, 36.958), (2, 37.35), (4, 37.89), (8, 47.37), (16, 69.94)),
        source="huggingface/optimum tests/benchmark/README.md, GPTQ benchmark, generation "
        "results, the unquantized (gptq False) rows: transformers fp16 on one A100-SXM4-80GB, "
        "prompt 512, 512 new tokens",
    ),
)


def measured_for(
    num_params: int, accelerator: str, engine: Engine, quantization: Quantization
) -> list[MeasuredSweep]:
    return [m for m in MEASURED if m.matches(num_params, accelerator, engine, quantization)]
