"""The engine interface the API drives, so tests (and other engines) can swap it."""

from ridgeline_serving.engine.base import (
    Engine,
    EngineStats,
    EventCallback,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    SequenceEvent,
    StepStats,
    TokenLogprob,
)

__all__ = [
    "Engine",
    "EngineStats",
    "EventCallback",
    "FinishReason",
    "GenerationRequest",
    "GenerationResult",
    "SequenceEvent",
    "StepStats",
    "TokenLogprob",
]
