"""Measured decode sweeps the step model is checked against, as data, each with its source.

``ridgeline plan --plot`` draws the points of a sweep whose GPU, quantization, engine and model
size match the plan; tests/unit/test_published_numbers.py holds the step model to each point.
``PUBLISHED`` sweeps come from others' measurements of the same software stack; ``OWN`` are
Ridgeline's engine itself, measured by ``make bench`` on a GPU (docs/benchmarks.md, "Serving,
GPU", with the machine).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


PUBLISHED: tuple[MeasuredSweep, ...] = (
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


def _own_sweeps(
    model: str,
    num_params: int,
    accelerator: str,
    batches: tuple[int, ...],
    steps_ms: Mapping[Quantization, Sequence[float]],
    source: str,
) -> tuple[MeasuredSweep, ...]:
    """Ridgeline's engine, one sweep per weight format: ``make bench``'s own GPU and CPU
    sweeps all use 128-token prompts and 64 new tokens."""
    return tuple(
        MeasuredSweep(
            model=model,
            num_params=num_params,
            accelerator=accelerator,
            engine=Engine.TRANSFORMERS,
            quantization=quantization,
            prompt_tokens=128,
            output_tokens=64,
            points=tuple(zip(batches, steps, strict=True)),
            source=source,
        )
        for quantization, steps in steps_ms.items()
    )


# Ridgeline's engine, tests/bench/bench_gpu.py on one H100-80GB-HBM3 (16-core host, torch 2.11,
# transformers 5.17, bitsandbytes 0.50): a random-weight Llama of TinyLlama-1.1B's shape (22
# layers), 128-token prompts, 64 new tokens, greedy; the median decode step while every row of
# the batch decodes, at batch 1 to 512.
_OWN_H100 = (
    "Ridgeline engine, make bench on one H100-80GB-HBM3 (tests/bench/bench_gpu.py; "
    "docs/benchmarks.md, Serving, GPU)"
)
_OWN_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_OWN_STEPS_MS = {
    Quantization.NONE: (17.11, 17.18, 16.99, 17.66, 16.66, 28.77, 19.50, 19.28, 22.54, 33.05),
    Quantization.INT8: (86.15, 89.62, 140.2, 87.50, 94.47, 132.84, 148.42, 105.13, 88.59, 113.63),
    Quantization.NF4: (22.85, 32.69, 32.14, 46.31, 54.48, 47.36, 46.18, 43.52, 47.01, 63.01),
}
OWN = _own_sweeps(
    "Llama-1.1B (random weights)",
    1_100_048_384,
    "H100-SXM5",
    _OWN_BATCHES,
    _OWN_STEPS_MS,
    _OWN_H100,
)

# Ridgeline's engine on a CPU, tests/bench/bench_cpu_steps.py on a 2-core x86_64 machine (torch
# 2.15, transformers 5.23, bitsandbytes 0.50, float32, two intra-op threads): a random-weight
# Llama of the example CPU model's shape (examples/models/tiny-llama: 4 layers, 3.4M
# parameters), 128-token prompts, 64 new tokens, greedy; the median decode step while every row
# of the batch decodes, at batch 1 to 128. A CPU's step time depends on its cores: these points
# are a 2-core pool's.
OWN_CPU_CORES = 2
_OWN_CPU = (
    "Ridgeline engine, make bench on a 2-core x86_64 CPU (tests/bench/bench_cpu_steps.py; "
    "docs/benchmarks.md, Serving, CPU step model)"
)
_OWN_CPU_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)
_OWN_CPU_STEPS_MS = {
    Quantization.NONE: (4.27, 7.26, 10.00, 9.99, 7.87, 14.68, 19.96, 29.07),
    Quantization.INT8: (10.59, 20.29, 19.19, 22.51, 21.51, 28.83, 36.13, 51.26),
    Quantization.NF4: (11.20, 12.96, 20.43, 23.06, 19.13, 26.83, 41.29, 37.04),
}
OWN_CPU = _own_sweeps(
    "Llama-3.4M (random weights, 4 layers)",
    3_426_560,
    "CPU",
    _OWN_CPU_BATCHES,
    _OWN_CPU_STEPS_MS,
    _OWN_CPU,
)

MEASURED: tuple[MeasuredSweep, ...] = PUBLISHED + OWN + OWN_CPU


def measured_for(
    num_params: int, accelerator: str, engine: Engine, quantization: Quantization
) -> list[MeasuredSweep]:
    return [m for m in MEASURED if m.matches(num_params, accelerator, engine, quantization)]
