"""The OpenAI-compatible API over an engine: a request's body read within its limits, its
admission and sequences (``jobs.py``), its answer (whole or streamed), and every outcome as an
OpenAI-shaped error counted by route and code. No Ray here: ``app.py`` puts it behind
Serve, and tests drive it with a stub engine.

Codes beyond HTTP's own: 499 (nginx's) counts a client that went away before its answer, so
a disconnect is never a server error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from ridgeline.api.serving_args import ServingArgs
from ridgeline.errors import validation_errors
from ridgeline_serving import openai_api as oa
from ridgeline_serving.chat_template import ChatTemplateError, ChatTemplateTimeoutError
from ridgeline_serving.engine import Engine, TokenLogprob
from ridgeline_serving.generation import generation_requests
from ridgeline_serving.health import EngineHealth
from ridgeline_serving.http_limits import (
    ClientGoneError,
    RequestLimits,
    SlowBodies,
    parse_json,
    read_body,
)
from ridgeline_serving.jobs import ApiMetrics, EngineError, Job, Jobs

log = logging.getLogger("ridgeline.serving")
CLIENT_GONE = 499


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
        self.jobs = Jobs(engine, health, metrics, args.max_batch_size + args.queue_limit)

    @property
    def inflight(self) -> int:
        """Admitted requests whose work is not gone (``Jobs``)."""
        return self.jobs.inflight

    # ---- answers -----------------------------------------------------------------------

    async def _respond(
        self, job: Job, route: str, body: oa.SamplingParams, prompt_ids: list[int], chat: bool
    ) -> Any:
        job.requests = generation_requests(
            self.args, self.engine.vocab_size, body, prompt_ids, chat
        )
        self.jobs.start(job)
        rid = oa.new_id("chatcmpl" if chat else "cmpl")
        prompt = len(prompt_ids)
        if body.stream:
            stream = self._stream(job, route, rid, chat, body, prompt)
            return StreamingResponse(stream, media_type="text/event-stream")
        n = len(job.requests)
        texts: list[list[str]] = [[] for _ in range(n)]
        logprobs: list[list[TokenLogprob]] = [[] for _ in range(n)]
        finishes: list[str] = ["length"] * n
        async for index, event in self.jobs.events(job):
            texts[index].append(event.delta)
            logprobs[index].extend(event.logprobs)
            finishes[index] = event.finish or finishes[index]
        self.jobs.account(job, prompt)
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
        generated = [0] * len(job.requests)  # each choice's tokens so far
        code = CLIENT_GONE
        try:
            if chat:
                for i in range(len(job.requests)):
                    first = oa.chat_delta(i, {"role": "assistant", "content": ""}, None, None)
                    sent = oa.chunk(rid, model, True, first)
                    if body.continuous_usage:
                        sent["usage"] = oa.usage(prompt, 0)
                    yield oa.sse(sent)
            try:
                async for index, event in self.jobs.events(job):
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
                    generated[index] = event.completion_tokens
                    sent = oa.chunk(rid, model, chat, choice)
                    if body.continuous_usage:
                        sent["usage"] = oa.usage(prompt, sum(generated))
                    yield oa.sse(sent)
                outcome = 200
            except EngineError as exc:
                log.error("generation failed: %s", exc)
                outcome = 500
                yield oa.sse(
                    {"error": {"message": str(exc), "type": "server_error", "code": "engine_error"}}
                )
            self.jobs.account(job, prompt)
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
            job = self.jobs.admit(arrived)
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
                self.jobs.release(job)

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
        if isinstance(exc, ValidationError):  # the first error, as the files name theirs
            param, message = validation_errors(exc)[0]
            exc = oa.ApiError(400, f"{param}: {message}" if param else message, param=param)
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
