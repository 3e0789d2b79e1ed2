"""What an engine does: take tokenized requests at any time, stream each one's text back as its
sequence advances, and let a request be cancelled. The scheduling (which sequences run in
which step) is the engine's own: the API submits and listens, nothing more."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None  # None: none; k >= 0: the chosen token's and the k most likely
    # vLLM's extensions: never stop at the end-of-sequence token; no end of sequence (nor stop
    # string) before min_tokens; the multiplicative penalty over prompt and output (1: off)
    ignore_eos: bool = False
    min_tokens: int = 0
    repetition_penalty: float = 1.0


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    token: str
    logprob: float
    top: list[tuple[str, float]]


@dataclass(slots=True)  # not frozen: one is made per sequence per step, and frozen __init__ is slow
class SequenceEvent:
    """What one step did to one sequence: new stable text, and its end if it ended."""

    delta: str
    finish: FinishReason | None
    completion_tokens: int
    logprobs: list[TokenLogprob] = field(default_factory=list)
    error: str | None = None  # the step failed; the sequence ended


@dataclass
class GenerationResult:
    text: str
    completion_tokens: int
    finish_reason: FinishReason
    logprobs: list[TokenLogprob] = field(default_factory=list)


EventCallback = Callable[[SequenceEvent], None]


@dataclass(frozen=True)
class EngineStats:
    running: int
    waiting: int
    kv_tokens_used: int
    kv_tokens_planned: int
    steps: int
    preemptions: int


@dataclass(frozen=True)
class StepStats:
    running: int
    prefill_tokens: int
    decode_tokens: int
    sampled_tokens: int  # tokens generated: one per decoded row and per prefilled prompt
    seconds: float


class Engine(Protocol):
    model_name: str
    max_context_tokens: int
    vocab_size: int

    def encode_prompt(self, prompt: str) -> list[int]: ...

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]: ...

    def submit(self, request: GenerationRequest, on_event: EventCallback) -> int:
        """Queue a sequence; ``on_event`` is called from the engine's thread. Returns its id."""
        ...

    def cancel(self, sequence_id: int) -> None:
        """Drop a sequence at the next step; once it has left the engine, its listener gets one
        last event with finish ``"cancelled"``. Unknown or finished ids are ignored."""
        ...

    def stats(self) -> EngineStats: ...

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Submit every request and wait for all of them (tests, benchmarks, warm-up)."""
        ...
