"""The Ray Serve application: ``build_app(args)`` -> one deployment with an OpenAI-compatible
FastAPI ingress. Each replica pulls the weights at start, loads them, and hands every request
to its engine, which batches continuously up to the planned batch (``engine/scheduler.py``);
Ray Serve routes and autoscales replicas and does no batching of its own.

No ``from __future__ import annotations`` here: FastAPI must see the route parameters' real
types (``Request``) through Ray Serve's ingress wrapper.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from ray import serve

from ridgeline_serving import openai_api as oa
from ridgeline_serving.args import ServingArgs
from ridgeline_serving.engine import (
    Engine,
    EngineStats,
    GenerationRequest,
    SequenceEvent,
    StepStats,
    TokenLogprob,
)
from ridgeline_serving.engine_log import EngineLog
from ridgeline_serving.http_limits import RequestLimits, parse_json, read_body
from ridgeline_serving.logs import configure_replica_logging
from ridgeline_serving.metrics import ServingMetrics
from ridgeline_serving.startup import StartupTimes, load_engine

log = logging.getLogger("ridgeline.serving")
api = FastAPI(title="Ridgeline", docs_url=None, redoc_url=None)


@dataclass
class Job:
    """One API request: its ``n`` sequences in the engine and what they sent back."""

    requests: list[GenerationRequest] = field(default_factory=list)
    events: asyncio.Queue[tuple[int, SequenceEvent]] = field(default_factory=asyncio.Queue)
    ids: list[int] = field(default_factory=list)
    open: set[int] = field(default_factory=set)
    created: float = field(default_factory=time.monotonic)
    first_token: float | None = None
    tokens: int = 0
    released: bool = False


@serve.deployment(name="model", max_ongoing_requests=4096, health_check_period_s=10)
@serve.ingress(api)
class ModelServer:
    def __init__(self, args: dict[str, Any] | ServingArgs, engine: Engine | None = None) -> None:
        configure_replica_logging()
        self.args = args if isinstance(args, ServingArgs) else ServingArgs.model_validate(args)
        self.metrics = ServingMetrics(self.args.model_name)
        self.startup = StartupTimes()
        self.engine_log: EngineLog | None = None  # made after the warm-up, which it leaves out
        if engine is None:
            engine, self.startup = load_engine(self.args, self._on_step)
            log.info(
                "replica ready in %.1f s: download %.1f s (%d bytes at %.2f GB/s), "
                "load %.1f s, warm-up %.1f s",
                self.startup.total_s,
                self.startup.download_s,
                self.startup.bytes,
                self.startup.gb_per_s,
                self.startup.load_s,
                self.startup.warmup_s,
            )
        self.engine = engine
        self.limits = RequestLimits.for_context(
            self.args.max_context_tokens, self.args.body_timeout_s
        )
        # admitted requests whose work is not gone: bodies being read, prompts being tokenized,
        # sequences in the engine (streams included, until the engine has dropped them)
        self.inflight = 0
        self.preemptions = 0
        if self.args.engine_log_interval_s > 0:
            self.engine_log = EngineLog(
                self.args.max_batch_size,
                self.args.planned_step_seconds,
                self.args.engine_log_interval_s,
            )
        self.metrics.refresh_gauges(self._each_second)

    def _on_step(self, stats: StepStats) -> None:
        """One engine step (the engine's thread)."""
        self.metrics.step(stats)
        if self.engine_log is not None:
            self.engine_log.step(stats)

    def _each_second(self) -> dict[str, float]:
        """The gauge thread's tick: the engine's log line when one is due, and the gauges."""
        stats = self.engine.stats()
        self._log_engine(stats)
        return self._gauges(stats)

    def _log_engine(self, stats: EngineStats) -> None:
        if self.engine_log is not None and (line := self.engine_log.line(stats)) is not None:
            log.info("%s", line)

    def _gauges(self, stats: EngineStats) -> dict[str, float]:
        if stats.preemptions > self.preemptions:
            self.metrics.preemptions.inc(stats.preemptions - self.preemptions, self.metrics.tags)
            self.preemptions = stats.preemptions
        return {
            "batch_target": self.args.max_batch_size,
            "queue_depth": self.inflight,
            "running_sequences": stats.running,
            "waiting_sequences": stats.waiting,
            "kv_cache_tokens": stats.kv_tokens_used,
            "kv_cache_planned_tokens": stats.kv_tokens_planned,
            "weight_load_seconds": self.startup.download_s + self.startup.load_s,
            "weight_load_bytes": self.startup.bytes,
            "weight_download_gigabytes_per_second": self.startup.gb_per_s,
            "startup_download": self.startup.download_s,
            "startup_load": self.startup.load_s,
            "startup_warmup": self.startup.warmup_s,
        }

    # ---- admission and the engine ------------------------------------------------------

    def _admit(self, route: str) -> Job:
        """A request counts from its first byte (before its body is read) until its work is
        gone: its answer sent, or its sequences dropped by the engine."""
        if self.inflight >= self.args.max_batch_size + self.args.queue_limit:
            self.metrics.request(route, 429)
            raise oa.ApiError(
                429,
                f"server busy: {self.inflight} requests in flight on this replica; retry",
                type_="rate_limit_exceeded",
                code="overloaded",
                headers={"Retry-After": "1"},
            )
        self.inflight += 1
        return Job()

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
            job.ids.append(self.engine.submit(request, listener(index)))
            job.open.add(index)

    def _deliver(self, job: Job, index: int, event: SequenceEvent) -> None:
        """On the event loop: queue the event; the request ends with its last sequence, so
        admission frees its slot even if no one reads the answer."""
        job.events.put_nowait((index, event))
        if event.finish is not None:
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
                    raise RuntimeError(event.error)
                if job.first_token is None and (event.delta or event.completion_tokens):
                    job.first_token = time.monotonic()
                    self.metrics.ttft.observe(job.first_token - job.created, self.metrics.tags)
                if event.finish is not None:
                    remaining -= 1
                    job.tokens += event.completion_tokens
                yield index, event
        finally:
            # the slot is freed when the engine says the sequences are gone (``_deliver``)
            for index in list(job.open):
                self.engine.cancel(job.ids[index])

    def _sampling(
        self, body: oa.SamplingParams, prompt_ids: list[int], chat: bool
    ) -> list[GenerationRequest]:
        if body.model != self.args.model_name:
            raise oa.ApiError(
                404,
                f"model {body.model!r} does not exist; this server serves {self.args.model_name!r}",
                param="model",
                code="model_not_found",
            )
        body.check_supported()
        param = "messages" if chat else "prompt"
        if not prompt_ids:
            raise oa.ApiError(400, "the prompt encodes to no tokens", param=param)
        if max(prompt_ids) >= self.engine.vocab_size:
            raise oa.ApiError(
                400,
                f"token id {max(prompt_ids)} is outside the vocabulary (size "
                f"{self.engine.vocab_size})",
                param=param,
            )
        context = self.args.max_context_tokens
        prompt = len(prompt_ids)
        wanted = body.max_tokens or min(self.args.default_max_tokens, max(context - prompt, 0))
        if prompt + wanted > context or wanted < 1:
            raise oa.ApiError(
                400,
                f"This model's maximum context length is {context} tokens. However, you "
                f"requested {prompt + max(wanted, 1)} tokens ({prompt} in the prompt, "
                f"{max(wanted, 1)} for the completion).",
                param=param,
                code="context_length_exceeded",
            )
        logprobs = body.top_logprobs_wanted
        return [
            GenerationRequest(
                prompt_ids,
                wanted,
                temperature=body.temperature,
                top_p=body.top_p,
                top_k=max(body.top_k, 0),
                # choice i of a seeded request is seeded too, each with its own seed
                seed=None if body.seed is None else body.seed + i,
                stop=body.stops,
                presence_penalty=body.presence_penalty,
                frequency_penalty=body.frequency_penalty,
                logprobs=logprobs,
            )
            for i in range(body.n)
        ]

    def _account(self, job: Job, prompt: int) -> None:
        self.metrics.prompt_tokens.inc(prompt, self.metrics.tags)
        if job.tokens:
            self.metrics.completion_tokens.inc(job.tokens, self.metrics.tags)
        per_choice = job.tokens / len(job.requests)
        if job.first_token is not None and per_choice > 1:
            per_token = (time.monotonic() - job.first_token) / (per_choice - 1)
            self.metrics.tpot.observe(per_token, self.metrics.tags)

    async def _respond(
        self, job: Job, route: str, body: oa.SamplingParams, prompt_ids: list[int], chat: bool
    ) -> Any:
        job.requests = self._sampling(body, prompt_ids, chat)
        self._start(job)
        rid = oa.new_id("chatcmpl" if chat else "cmpl")
        prompt = len(prompt_ids)
        if not body.stream:
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
                    (
                        oa.chat_logprobs(logprobs[i])
                        if chat
                        else oa.completion_logprobs(logprobs[i], 0)
                    )
                    if wants
                    else None,
                )
                for i in range(n)
            ]
            return oa.body(rid, self.args.model_name, chat, choices, prompt, job.tokens)
        self.metrics.request(route, 200)
        return StreamingResponse(
            self._stream(job, rid, chat, body, prompt), media_type="text/event-stream"
        )

    async def _stream(
        self, job: Job, rid: str, chat: bool, body: oa.SamplingParams, prompt: int
    ) -> AsyncIterator[str]:
        model = self.args.model_name
        wants = body.top_logprobs_wanted is not None
        offsets = [0] * len(job.requests)
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
                    lp = oa.completion_logprobs(event.logprobs, offsets[index]) if wants else None
                    choice = oa.completion_choice(index, event.delta, event.finish, lp)
                offsets[index] += len(event.delta)
                yield oa.sse(oa.chunk(rid, model, chat, choice))
        except Exception as exc:  # the stream has started: report in-band
            log.exception("generation failed")
            yield oa.sse({"error": {"message": str(exc), "type": "server_error"}})
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

    # ---- routes ------------------------------------------------------------------------

    @api.get("/health")
    async def health(self) -> dict[str, str]:
        return {"status": "ok", "model": self.args.model_name}

    @api.get("/v1/models")
    async def models(self) -> dict[str, Any]:
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

    @api.post("/v1/completions")
    async def completions(self, request: Request) -> Any:
        return await self._handle("/v1/completions", request, chat=False)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Any:
        return await self._handle("/v1/chat/completions", request, chat=True)

    async def _handle(self, route: str, request: Request, chat: bool) -> Any:
        try:
            job = self._admit(route)
        except oa.ApiError as exc:
            return self._error(route, exc)
        try:
            raw = await read_body(request, self.limits)
            kind = request.headers.get("content-type", "application/json")
            # parsing and tokenizing a long prompt takes a while: off the event loop, so
            # /health and the other requests' streams go on meanwhile
            body, ids = await asyncio.to_thread(self._prepare, kind, raw, chat)
            del raw
            return await self._respond(job, route, body, ids, chat)
        except (oa.ApiError, ValidationError) as exc:
            return self._error(route, exc)
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
            return body, self.engine.encode_chat(messages)
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
        if exc.status != 429:  # 429s were counted at admission
            self.metrics.request(route, exc.status)
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)


def build_app(args: dict[str, Any]) -> serve.Application:
    """The app builder that ``serveConfigV2`` names: ``ridgeline_serving.app:build_app``."""
    parsed = ServingArgs.model_validate(args)
    app: serve.Application = ModelServer.options(  # type: ignore[attr-defined]
        ray_actor_options={"num_gpus": parsed.gpus_per_replica, "num_cpus": parsed.num_cpus},
        max_ongoing_requests=parsed.max_ongoing_requests,
    ).bind(parsed.model_dump(mode="json"))
    return app
