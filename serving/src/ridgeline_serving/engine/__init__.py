"""The engine interface the API drives, so tests (and later engines) can swap it."""

from ridgeline_serving.engine.base import (
    Engine,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    StepCallback,
)

__all__ = ["Engine", "FinishReason", "GenerationRequest", "GenerationResult", "StepCallback"]
