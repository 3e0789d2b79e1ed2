"""The OpenAI-compatible API over an engine: a request's body read within its limits, its
admission, its sequences in the engine, its answer (whole or streamed), and every outcome as
an OpenAI-shaped error counted by route and code. No Ray here: ``app.py`` puts it behind
Serve, and tests drive it with a stub engine.

Codes beyond HTTP's own: 499 (nginx's) counts a client that went away before its answer, so
a disconnect is never a server error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from ridgeline_serving import openai_api as oa
from ridgeline_serving.args import ServingArgs
from ridgeline_serving.chat_template import ChatTemplateError, ChatTemplateTimeoutError
from ridgeline_serving.engine import Engine, GenerationRequest, SequenceEvent, TokenLogprob
from ridgeline_serving.generation import generation_requests
from ridgeline_serving.health import EngineHealth
from ridgeline_serving.http_limits import (
    ClientGoneError,
    RequestLimits,
    SlowBodies,
    parse_json,
    read_body,
)

log = logging.getLogger("ridgeline.serving")
CLIENT_GONE = 499


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


class OpenAIServer:
    def __init__(
        self, args: ServingArgs, engine: Engine, metrics: ApiMetrics, health: EngineHealth
    ) -> None:
        self.args = args
        self.engine = engine
        self.metrics = metrics
        self.health = health
        self.limits = RequestLimits.for_context(args.max_context_tokens, args.body_timeout_s)
        # half of Serve's headroom beyond batch + queue; the rest keeps /health answering
        self.slow_bodies = SlowBodies(max(1, args.ongoing_requests_headroom // 2))
        # admitted requests whose work is not gone: prompts being tokenized, sequences in the
        # engine (streams included, until the engine has dropped them)
        self.inflight = 0

    # ---- admission and the engine ------------------------------------------------------

    def _admit(self, arrived: float) -> Job:
        """A request counts once its body is complete until its work is gone: its answer
        sent, or its sequences dropped by the engine."""
        if self.inflight >= self.args.max_batch_size + self.args.queue_limit:
            raise oa.ApiError(
                429,
                f"server busy: {self.inflight} requests in flight on this replica; retry",
                type_="rate_limit_exceeded",
                code="overloaded",
                headers={"Retry-After": "1"},
            )
        self.inflight += 1
        return Job(arrived)

    def _release(self, job: Job) -> None:
        if not job.released:
            job.released = True
            self.inflight -= 1

    def _start(self, job: Job) -> None:
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
                self._release(job)

    async def _events(self, job: Job) -> AsyncIterator[tuple[int, SequenceEvent]]:
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

    def _account(self, job: Job, prompt: int) -> None:
        per_choice = job.tokens / len(job.requests)
        per_token = None
        if job.first_token is not None and per_choice > 1:
            per_token = (time.monotonic() - job.first_token) / (per_choice - 1)
        self.metrics.tokens(prompt, job.tokens, per_token)

    # ---- answers -----------------------------------------------------------------------

    async def _respond(
        self, job: Job, route: str, body: oa.SamplingParams, prompt_ids: list[int], chat: bool
    ) -> Any:
        job.requests = generation_requests(
            self.args, self.engine.vocab_size, body, prompt_ids, chat
        )
        self._start(job)
        rid = oa.new_id("chatcmpl" if chat else "cmpl")
        prompt = len(prompt_ids)
        if body.stream:
            stream = self._stream(job, route, rid, chat, body, prompt)
            return StreamingResponse(stream, media_type="text/event-stream")
        n = len(job.requests)
        texts: list[list[str]] = [[] for _ in range(n)]
        logprobs: list[list[TokenLogprob]] = [[] for _ in range(n)]
        finishes: list[str] = ["length"] * n
        async for index, event in self._events(job):
            texts[index].append(event.delta)
            logprobs[index].extend(event.logprobs)
            finishes[index] = event.finish or finishes[index]
        self._account(job, prompt)
        self.metrics.request(route, 200)
        wants = body.top_logprobs_wanted is not None
        choices = [
            (oa.chat_choice if chat else oa.completion_choice)(
                i,
                "".join(texts[i]),
                finishes[i],
                (oa.chat_logprobs(logprobs[i]) if chat else oa.completion_logprobs(logprobs[i], 0))
                if wants
                else None,
            )
            for i in range(n)
        ]
        return oa.body(rid, self.args.model_name, chat, choices, prompt, job.tokens)

    async def _stream(
        self,
        job: Job,
        route: str,
        rid: str,
        chat: bool,
        body: oa.SamplingParams,
        prompt: int,
    ) -> AsyncIterator[str]:
        """The answer as SSE; counted when it ends: 200, 500 (the engine failed, reported
        in-band since the status line is sent), or 499 (the client left)."""
        model = self.args.model_name
        wants = body.top_logprobs_wanted is not None
        offsets = [0] * len(job.requests)
        code = CLIENT_GONE
        try:
            if chat:
                for i in range(len(job.requests)):
                    first = oa.chat_delta(i, {"role": "assistant", "content": ""}, None, None)
                    yield oa.sse(oa.chunk(rid, model, True, first))
            try:
                async for index, event in self._events(job):
                    if chat:
                        lp = oa.chat_logprobs(event.logprobs) if wants else None
                        delta = {"content": event.delta} if event.delta else {}
                        choice = oa.chat_delta(index, delta, event.finish, lp)
                    else:
                        lp = (
                            oa.completion_logprobs(event.logprobs, offsets[index])
                            if wants
                            else None
                        )
                        choice = oa.completion_choice(index, event.delta, event.finish, lp)
                    offsets[index] += len(event.delta)
                    yield oa.sse(oa.chunk(rid, model, chat, choice))
                outcome = 200
            except EngineError as exc:
                log.error("generation failed: %s", exc)
                outcome = 500
                yield oa.sse(
                    {"error": {"message": str(exc), "type": "server_error", "code": "engine_error"}}
                )
            self._account(job, prompt)
            if body.include_usage:
                yield oa.sse(
                    {
                        "id": rid,
                        "object": "chat.completion.chunk" if chat else "text_completion",
                        "model": model,
                        "choices": [],
                        "usage": oa.usage(prompt, job.tokens),
                    }
                )
            yield oa.sse("[DONE]")
            code = outcome
        finally:
            self.metrics.request(route, code)

    # ---- requests ----------------------------------------------------------------------

    async def handle(self, route: str, request: Request, chat: bool) -> Any:
        arrived = time.monotonic()
        try:
            raw = await read_body(request, self.limits, self.slow_bodies)
            job = self._admit(arrived)
        except oa.ApiError as exc:
            return self._error(route, exc)
        except ClientGoneError:
            log.info("%s: the client left before its body arrived", route)
            self.metrics.request(route, CLIENT_GONE)
            return Response(status_code=CLIENT_GONE)
        try:
            kind = request.headers.get("content-type", "application/json")
            # parsing and tokenizing a long prompt takes a while: off the event loop, so
            # /health and the other requests' streams go on meanwhile
            body, ids = await asyncio.to_thread(self._prepare, kind, raw, chat)
            del raw
            return await self._respond(job, route, body, ids, chat)
        except (oa.ApiError, ValidationError) as exc:
            return self._error(route, exc)
        except EngineError as exc:
            log.error("generation failed: %s", exc)
            failed = oa.ApiError(
                500, f"generation failed: {exc}", type_="server_error", code="engine_error"
            )
            return self._error(route, failed)
        except asyncio.CancelledError:  # the client left while its answer was being made
            self.metrics.request(route, CLIENT_GONE)
            raise
        except Exception as exc:
            log.exception("%s failed", route)
            failed = oa.ApiError(500, f"internal error: {type(exc).__name__}", type_="server_error")
            return self._error(route, failed)
        finally:
            if not job.ids:  # never reached the engine: nothing else will free its slot
                self._release(job)

    def _prepare(
        self, content_type: str, raw: bytes, chat: bool
    ) -> tuple[oa.SamplingParams, list[int]]:
        data = parse_json(content_type, raw)
        if chat:
            body = oa.ChatCompletionRequest.model_validate(data)
            messages = [m.flat() for m in body.messages]
            self.limits.check_prompt(sum(len(m["content"]) for m in messages), "messages")
            try:
                return body, self.engine.encode_chat(messages)
            except ChatTemplateError as exc:
                raise oa.ApiError(
                    400,
                    f"the model's chat template refused these messages: {exc}",
                    param="messages",
                    code="chat_template_error",
                ) from None
            except ChatTemplateTimeoutError as exc:
                raise oa.ApiError(
                    500, str(exc), type_="server_error", code="chat_template_timeout"
                ) from None
        completion = oa.CompletionRequest.model_validate(data)
        if completion.token_ids is not None:
            return completion, completion.token_ids
        assert completion.text is not None
        self.limits.check_prompt(len(completion.text), "prompt")
        return completion, self.engine.encode_prompt(completion.text)

    def _error(self, route: str, exc: Exception) -> JSONResponse:
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first["loc"]) or None
            exc = oa.ApiError(
                400, f"{param}: {first['msg']}" if param else first["msg"], param=param
            )
        assert isinstance(exc, oa.ApiError)
        self.metrics.request(route, exc.status)
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

    # ---- the other routes --------------------------------------------------------------

    def models(self) -> dict[str, Any]:
        self.metrics.request("/v1/models", 200)
        return {
            "object": "list",
            "data": [
                {
                    "id": self.args.model_name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "ridgeline",
                    "max_model_len": self.args.max_context_tokens,
                }
            ],
        }

    def health_answer(self) -> JSONResponse:
        """200 while the engine can step; 503 with the reason when it cannot."""
        broken = self.health.check()
        if broken is not None:
            body = {"status": "unhealthy", "model": self.args.model_name, "reason": broken}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ok", "model": self.args.model_name})
