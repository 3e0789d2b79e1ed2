"""What an engine does: turn a batch of tokenized requests into text, step by step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


@dataclass
class GenerationResult:
    text: str
    completion_tokens: int
    finish_reason: FinishReason


# (request index in the batch, text delta, finish reason or None) after each decode step
StepCallback = Callable[[int, str, FinishReason | None], None]


class Engine(Protocol):
    model_name: str
    max_context_tokens: int

    def encode_prompt(self, prompt: str) -> list[int]: ...

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]: ...

    def generate(
        self, requests: list[GenerationRequest], on_step: StepCallback | None = None
    ) -> list[GenerationResult]:
        """Decode the whole batch together; calls ``on_step`` from the engine's thread."""
        ...
