"""A request's sequences in the engine: admission against the replica's in-flight limit, the
engine's events handed to the request's event loop, the sequences cancelled when the request
goes away, and what it cost counted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from ridgeline_serving import openai_api as oa
from ridgeline_serving.engine import Engine, GenerationRequest, SequenceEvent
from ridgeline_serving.health import EngineHealth


class ApiMetrics(Protocol):
    def request(self, route: str, code: int) -> None: ...

    def first_token(self, seconds: float) -> None: ...

    def tokens(self, prompt: int, completion: int, per_token_s: float | None) -> None: ...


class EngineError(RuntimeError):
    """A step failed for one of the request's sequences (its message is the engine's)."""


@dataclass
class Job:
    """One API request: its ``n`` sequences in the engine and what they sent back."""

    created: float
    requests: list[GenerationRequest] = field(default_factory=list)
    events: asyncio.Queue[tuple[int, SequenceEvent]] = field(default_factory=asyncio.Queue)
    ids: list[int] = field(default_factory=list)
    open: set[int] = field(default_factory=set)
    first_token: float | None = None
    tokens: int = 0
    released: bool = False


class Jobs:
    def __init__(
        self, engine: Engine, health: EngineHealth, metrics: ApiMetrics, limit: int
    ) -> None:
        self.engine = engine
        self.health = health
        self.metrics = metrics
        self.limit = limit
        # admitted requests whose work is not gone: prompts being tokenized, sequences in the
        # engine (streams included, until the engine has dropped them)
        self.inflight = 0

    def admit(self, arrived: float) -> Job:
        """A request counts once its body is complete until its work is gone: its answer
        sent, or its sequences dropped by the engine."""
        if self.inflight >= self.limit:
            raise oa.ApiError(
                429,
                f"server busy: {self.inflight} requests in flight on this replica; retry",
                type_="rate_limit_exceeded",
                code="overloaded",
                headers={"Retry-After": "1"},
            )
        self.inflight += 1
        return Job(arrived)

    def release(self, job: Job) -> None:
        if not job.released:
            job.released = True
            self.inflight -= 1

    def start(self, job: Job) -> None:
        loop = asyncio.get_running_loop()

        def listener(index: int) -> Callable[[SequenceEvent], None]:
            def on_event(event: SequenceEvent) -> None:
                loop.call_soon_threadsafe(self._deliver, job, index, event)

            return on_event

        for index, request in enumerate(job.requests):
            self.health.submitted()
            job.ids.append(self.engine.submit(request, listener(index)))
            job.open.add(index)

    def _deliver(self, job: Job, index: int, event: SequenceEvent) -> None:
        """On the event loop: queue the event; the request ends with its last sequence, so
        admission frees its slot even if no one reads the answer."""
        job.events.put_nowait((index, event))
        if event.finish is not None:
            self.health.finished(event.error)
            job.open.discard(index)
            if not job.open:
                self.release(job)

    async def events(self, job: Job) -> AsyncIterator[tuple[int, SequenceEvent]]:
        """The job's events until its last sequence ends; a client that goes away (this
        coroutine cancelled or closed) cancels the sequences still running."""
        try:
            remaining = len(job.requests)
            while remaining:
                index, event = await job.events.get()
                if event.error:
                    raise EngineError(event.error)
                if job.first_token is None and (event.delta or event.completion_tokens):
                    job.first_token = time.monotonic()
                    self.metrics.first_token(job.first_token - job.created)
                if event.finish is not None:
                    remaining -= 1
                    job.tokens += event.completion_tokens
                yield index, event
        finally:
            # the slot is freed when the engine says the sequences are gone (``_deliver``)
            for index in list(job.open):
                self.engine.cancel(job.ids[index])

    def account(self, job: Job, prompt: int) -> None:
        per_choice = job.tokens / len(job.requests)
        per_token = None
        if job.first_token is not None and per_choice > 1:
            per_token = (time.monotonic() - job.first_token) / (per_choice - 1)
        self.metrics.tokens(prompt, job.tokens, per_token)
