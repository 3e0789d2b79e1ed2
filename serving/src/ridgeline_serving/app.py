"""The Ray Serve application: ``build_app(args)`` -> one deployment with an OpenAI-compatible
FastAPI ingress. Each replica pulls the weights at start, loads them, and batches requests up
to the planned batch target with ``@serve.batch``.

No ``from __future__ import annotations`` here: FastAPI must see the route parameters' real
types (``Request``) through Ray Serve's ingress wrapper.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from ray import serve

from ridgeline.storage import open_store
from ridgeline.storage.download import download_model
from ridgeline_serving import openai_api as oa
from ridgeline_serving.args import ServingArgs
from ridgeline_serving.engine import Engine, FinishReason, GenerationRequest, GenerationResult
from ridgeline_serving.metrics import ServingMetrics

log = logging.getLogger("ridgeline.serving")
api = FastAPI(title="Ridgeline", docs_url=None, redoc_url=None)


@dataclass
class Job:
    request: GenerationRequest
    queue: asyncio.Queue[tuple[str, FinishReason | None]] = field(default_factory=asyncio.Queue)
    created: float = field(default_factory=time.monotonic)
    first_token: float | None = None
    result: GenerationResult | None = None


@dataclass(frozen=True)
class LoadStats:
    seconds: float
    bytes: int
    gb_per_s: float


def load_engine(args: ServingArgs) -> tuple[Engine, LoadStats]:
    """Pull the weights into the node cache, then load them: the replica's start-up."""
    from ridgeline_serving.engine.transformers_engine import TransformersEngine

    started = time.monotonic()
    stats = download_model(
        open_store(args.model_uri),
        Path(args.cache_dir).expanduser(),
        manifest_key=args.sha256_manifest,
        parallel=args.download_parallelism,
    )
    engine = TransformersEngine(
        stats.path,
        args.model_name,
        args.quantization,
        args.compute_dtype,
        args.gpus_per_replica,
        args.max_context_tokens,
    )
    return engine, LoadStats(time.monotonic() - started, stats.bytes_downloaded, stats.gb_per_s)


@serve.deployment(name="model", max_ongoing_requests=4096, health_check_period_s=10)
@serve.ingress(api)
class ModelServer:
    def __init__(self, args: dict[str, Any] | ServingArgs, engine: Engine | None = None) -> None:
        self.args = args if isinstance(args, ServingArgs) else ServingArgs.model_validate(args)
        self.metrics = ServingMetrics(self.args.model_name)
        self.load = LoadStats(0.0, 0, 0.0)
        if engine is None:
            engine, self.load = load_engine(self.args)
            log.info(
                "replica ready in %.1f s (%d bytes fetched at %.2f GB/s)",
                self.load.seconds,
                self.load.bytes,
                self.load.gb_per_s,
            )
        self.engine = engine
        self.inflight = 0
        self.metrics.refresh_gauges(
            lambda: {
                "batch_target": self.args.max_batch_size,
                "queue_depth": self.inflight,
                "weight_load_seconds": self.load.seconds,
                "weight_load_bytes": self.load.bytes,
                "weight_download_gigabytes_per_second": self.load.gb_per_s,
            }
        )
        # The decorator's defaults are placeholders: each replica batches up to the plan.
        self._batched.set_max_batch_size(self.args.max_batch_size)  # type: ignore[attr-defined]
        self._batched.set_batch_wait_timeout_s(self.args.batch_wait_timeout_s)  # type: ignore[attr-defined]

    # ---- batching ----------------------------------------------------------------------

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _batched(self, jobs: list[Job]) -> list[GenerationResult]:
        self.metrics.batch_size.observe(len(jobs), self.metrics.tags)
        loop = asyncio.get_running_loop()

        def on_step(row: int, delta: str, finish: FinishReason | None) -> None:
            loop.call_soon_threadsafe(jobs[row].queue.put_nowait, (delta, finish))

        return await asyncio.to_thread(self.engine.generate, [j.request for j in jobs], on_step)

    # ---- request handling --------------------------------------------------------------

    def _admit(self, route: str) -> None:
        if self.inflight >= self.args.max_batch_size + self.args.queue_limit:
            self.metrics.request(route, 429)
            raise oa.ApiError(
                429,
                f"server busy: {self.inflight} requests in flight on this replica; retry",
                type_="rate_limit_exceeded",
                code="overloaded",
                headers={"Retry-After": "1"},
            )

    def _sampling(
        self, body: oa.SamplingParams, prompt_ids: list[int], chat: bool
    ) -> GenerationRequest:
        if body.model != self.args.model_name:
            raise oa.ApiError(
                404,
                f"model {body.model!r} does not exist; this server serves {self.args.model_name!r}",
                param="model",
                code="model_not_found",
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
                param="messages" if chat else "prompt",
                code="context_length_exceeded",
            )
        return GenerationRequest(
            prompt_ids, wanted, body.temperature, body.top_p, body.seed, body.stops
        )

    async def _run(self, job: Job) -> AsyncIterator[tuple[str, FinishReason | None]]:
        self.inflight += 1
        task = asyncio.ensure_future(self._batched(job))
        try:
            while True:
                getter = asyncio.ensure_future(job.queue.get())
                done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    delta, finish = getter.result()
                    if job.first_token is None:
                        job.first_token = time.monotonic()
                        self.metrics.ttft.observe(job.first_token - job.created, self.metrics.tags)
                    yield delta, finish
                    if finish is not None:
                        break
                else:
                    getter.cancel()
                    task.result()  # raises the engine's error, if any
                    if job.queue.empty():
                        break
            job.result = await task
        finally:
            self.inflight -= 1

    def _account(self, job: Job, prompt: int, completion: int) -> None:
        self.metrics.prompt_tokens.inc(prompt, self.metrics.tags)
        if completion:
            self.metrics.completion_tokens.inc(completion, self.metrics.tags)
        if job.first_token is not None and completion > 1:
            per_token = (time.monotonic() - job.first_token) / (completion - 1)
            self.metrics.tpot.observe(per_token, self.metrics.tags)

    async def _respond(
        self, route: str, body: oa.SamplingParams, prompt_ids: list[int], chat: bool
    ) -> Any:
        job = Job(self._sampling(body, prompt_ids, chat))
        self._admit(route)
        rid = oa.new_id("chatcmpl" if chat else "cmpl")
        model = self.args.model_name
        prompt = len(prompt_ids)
        if not body.stream:
            parts: list[str] = []
            finish: FinishReason | None = None
            async for delta, step_finish in self._run(job):
                parts.append(delta)
                finish = step_finish or finish
            completion = job.result.completion_tokens if job.result else 0
            self._account(job, prompt, completion)
            self.metrics.request(route, 200)
            build = oa.chat_body if chat else oa.completion_body
            return build(rid, model, "".join(parts), finish or "length", prompt, completion)
        self.metrics.request(route, 200)
        return StreamingResponse(
            self._stream(job, rid, chat, body.include_usage, prompt), media_type="text/event-stream"
        )

    async def _stream(
        self, job: Job, rid: str, chat: bool, include_usage: bool, prompt: int
    ) -> AsyncIterator[str]:
        model = self.args.model_name
        if chat:
            yield oa.sse(oa.chat_chunk(rid, model, {"role": "assistant", "content": ""}, None))
        try:
            async for delta, finish in self._run(job):
                if chat:
                    yield oa.sse(
                        oa.chat_chunk(rid, model, {"content": delta} if delta else {}, finish)
                    )
                else:
                    yield oa.sse(oa.completion_chunk(rid, model, delta, finish))
        except Exception as exc:  # the stream has started: report in-band
            log.exception("generation failed")
            yield oa.sse({"error": {"message": str(exc), "type": "server_error"}})
        tokens = job.result.completion_tokens if job.result else 0
        self._account(job, prompt, tokens)
        if include_usage:
            yield oa.sse(
                {
                    "id": rid,
                    "object": "chat.completion.chunk" if chat else "text_completion",
                    "model": model,
                    "choices": [],
                    "usage": oa.usage(prompt, tokens),
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
        route = "/v1/completions"
        try:
            body = oa.CompletionRequest.model_validate(await oa.read_json(request))
            return await self._respond(route, body, self.engine.encode_prompt(body.text), False)
        except (oa.ApiError, ValidationError) as exc:
            return self._error(route, exc)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Any:
        route = "/v1/chat/completions"
        try:
            body = oa.ChatCompletionRequest.model_validate(await oa.read_json(request))
            ids = self.engine.encode_chat([m.flat() for m in body.messages])
            return await self._respond(route, body, ids, True)
        except (oa.ApiError, ValidationError) as exc:
            return self._error(route, exc)

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
    gpus = parsed.gpus_per_replica
    app: serve.Application = ModelServer.options(  # type: ignore[attr-defined]
        ray_actor_options={"num_gpus": gpus, "num_cpus": 1},
        max_ongoing_requests=parsed.max_batch_size + parsed.queue_limit + 8,
    ).bind(parsed.model_dump(mode="json"))
    return app
