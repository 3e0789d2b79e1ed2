"""The API layer against a stub engine, with no Ray and no model: every error path is an
OpenAI-shaped answer counted by route and code, slow bodies do not lock complete requests out,
and a client that leaves is a 499, not a server error."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from ridgeline.api.serving_args import ServingArgs
from ridgeline_serving.api_server import OpenAIServer
from ridgeline_serving.chat_template import ChatTemplateError, ChatTemplateTimeoutError
from ridgeline_serving.engine import (
    EngineStats,
    EventCallback,
    GenerationRequest,
    GenerationResult,
    SequenceEvent,
)
from ridgeline_serving.health import EngineHealth
from ridgeline_serving.routes import build_api

MODEL = "stub"
Message = dict[str, Any]


class StubEngine:
    """Answers each sequence at once with ``max_tokens`` x "a", or fails it as a broken step
    does (``fail``), or keeps it until ``finish_held`` (``hold``)."""

    model_name = MODEL
    max_context_tokens = 256
    vocab_size = 100

    def __init__(self) -> None:
        self.fail: str | None = None
        self.hold = False
        self.template_error: Exception | None = None
        self.held: list[tuple[GenerationRequest, EventCallback]] = []
        self.cancelled: list[int] = []
        self.submitted = 0

    def encode_prompt(self, prompt: str) -> list[int]:
        return [ord(c) % self.vocab_size for c in prompt]

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        if self.template_error is not None:
            raise self.template_error
        return self.encode_prompt("".join(m["content"] for m in messages))

    def submit(self, request: GenerationRequest, on_event: EventCallback) -> int:
        self.submitted += 1
        if self.hold:
            self.held.append((request, on_event))
        else:
            self._answer(request, on_event)
        return self.submitted

    def _answer(self, request: GenerationRequest, on_event: EventCallback) -> None:
        if self.fail is not None:
            on_event(SequenceEvent("", "stop", 0, error=self.fail))
            return
        for i in range(request.max_tokens):
            last = i == request.max_tokens - 1
            on_event(SequenceEvent("a", "length" if last else None, i + 1))

    def finish_held(self) -> None:
        held, self.held = self.held, []
        for request, on_event in held:
            self._answer(request, on_event)

    def cancel(self, sequence_id: int) -> None:
        self.cancelled.append(sequence_id)

    def stats(self) -> EngineStats:
        return EngineStats(0, 0, 0, 0, 0, 0)

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        raise NotImplementedError("the API never calls generate")


class Metrics:
    def __init__(self) -> None:
        self.codes: list[tuple[str, int]] = []

    def request(self, route: str, code: int) -> None:
        self.codes.append((route, code))

    def first_token(self, seconds: float) -> None:
        pass

    def tokens(self, prompt: int, completion: int, per_token_s: float | None) -> None:
        pass


def _server(**args: Any) -> tuple[OpenAIServer, StubEngine, Metrics]:
    serving = ServingArgs.model_validate(
        {
            "model_uri": "file:///unused",
            "model_name": MODEL,
            "compute_dtype": "float32",
            "gpus_per_replica": 0,
            "max_context_tokens": 256,
            "max_batch_size": 4,
            **args,
        }
    )
    engine, metrics = StubEngine(), Metrics()
    health = EngineHealth(60, engine.submit)
    return OpenAIServer(serving, engine, metrics, health), engine, metrics


def _post(server: OpenAIServer, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=build_api(server))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(path, content=json.dumps(body), headers=headers)

    return asyncio.run(go())


COMPLETION = {"model": MODEL, "prompt": "hi", "max_tokens": 3}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
JSON = {"content-type": "application/json"}


def test_a_completion_is_answered_and_counted() -> None:
    server, _, metrics = _server()
    response = _post(server, "/v1/completions", COMPLETION, **JSON)
    assert response.status_code == 200
    assert response.json()["choices"][0]["text"] == "aaa"
    assert metrics.codes == [("/v1/completions", 200)]
    assert server.inflight == 0


@pytest.mark.parametrize("kind", ["APPLICATION/JSON", "Application/Json; charset=UTF-8"])
def test_media_types_are_case_insensitive(kind: str) -> None:
    server, _, _ = _server()
    assert _post(server, "/v1/completions", COMPLETION, **{"content-type": kind}).status_code == 200


@pytest.mark.parametrize(
    ("path", "body"), [("/v1/completions", COMPLETION), ("/v1/chat/completions", CHAT)]
)
def test_an_engine_failure_is_an_openai_error_and_counted(path: str, body: dict[str, Any]) -> None:
    server, engine, metrics = _server()
    engine.fail = "RuntimeError: CUDA error: an illegal memory access was encountered"
    response = _post(server, path, body, **JSON)
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "server_error"
    assert error["code"] == "engine_error"
    assert "illegal memory access" in error["message"]
    assert metrics.codes == [(path, 500)]
    assert server.inflight == 0


def test_a_failure_in_a_stream_is_in_band_and_counted_as_500() -> None:
    server, engine, metrics = _server()
    engine.fail = "RuntimeError: step failed"
    response = _post(server, "/v1/completions", {**COMPLETION, "stream": True}, **JSON)
    assert response.status_code == 200  # the status line is sent before the engine runs
    events = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert json.loads(events[0].removeprefix("data: "))["error"]["code"] == "engine_error"
    assert events[-1] == "data: [DONE]"
    assert metrics.codes == [("/v1/completions", 500)]


def _chunks(response: httpx.Response) -> list[dict[str, Any]]:
    lines = [line.removeprefix("data: ") for line in response.text.splitlines()]
    return [json.loads(line) for line in lines if line and line != "[DONE]"]


@pytest.mark.parametrize("chat", [False, True])
def test_continuous_usage_stats_put_the_usage_so_far_on_every_chunk(chat: bool) -> None:
    """vLLM's extension, which guidellm sends with every streamed request: each chunk
    carries the usage so far, the last one the whole."""
    server, _, _ = _server()
    options = {"include_usage": True, "continuous_usage_stats": True}
    body = {**(CHAT if chat else COMPLETION), "stream": True, "stream_options": options}
    chunks = _chunks(_post(server, f"/v1/{'chat/' if chat else ''}completions", body, **JSON))
    tokens = [c["usage"]["completion_tokens"] for c in chunks if c["choices"]]
    assert tokens == ([0] if chat else []) + [1, 2, 3]  # chat's role chunk comes first
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert all(c["usage"]["prompt_tokens"] == 2 for c in chunks)


def test_usage_on_every_chunk_only_where_the_usage_is_asked() -> None:
    server, _, _ = _server()
    body = {**COMPLETION, "stream": True, "stream_options": {"continuous_usage_stats": True}}
    chunks = _chunks(_post(server, "/v1/completions", body, **JSON))
    assert chunks
    assert all("usage" not in c for c in chunks)


def test_a_chat_template_that_raises_is_a_400_naming_the_template() -> None:
    server, engine, metrics = _server()
    engine.template_error = ChatTemplateError("TemplateError: roles must alternate")
    response = _post(server, "/v1/chat/completions", CHAT, **JSON)
    assert response.status_code == 400
    error = response.json()["error"]
    assert "chat template" in error["message"]
    assert "roles must alternate" in error["message"]
    assert error["param"] == "messages"
    assert error["code"] == "chat_template_error"
    assert metrics.codes == [("/v1/chat/completions", 400)]


def test_a_chat_template_past_its_time_is_a_counted_server_error() -> None:
    server, engine, metrics = _server()
    engine.template_error = ChatTemplateTimeoutError("did not finish within 2 s")
    response = _post(server, "/v1/chat/completions", CHAT, **JSON)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "chat_template_timeout"
    assert metrics.codes == [("/v1/chat/completions", 500)]
    assert server.inflight == 0


def test_an_unexpected_error_is_an_openai_500() -> None:
    server, engine, metrics = _server()
    engine.template_error = KeyError("bug")
    response = _post(server, "/v1/chat/completions", CHAT, **JSON)
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    assert metrics.codes == [("/v1/chat/completions", 500)]


# ---- bodies, driven through ASGI by hand --------------------------------------------------

Receive = Callable[[], Awaitable[Message]]


async def _call(server: OpenAIServer, app: Any, receive: Receive) -> list[Message]:
    """One POST /v1/completions with ``receive`` as its body; what the app sent back."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/completions",
        "raw_path": b"/v1/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "server": ("t", 80),
        "client": ("c", 1),
    }
    await app(scope, receive, send)
    return sent


def _status(sent: list[Message]) -> int:
    return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))


def _complete_body() -> Receive:
    parts = [json.dumps(COMPLETION).encode()]

    async def receive() -> Message:
        if parts:
            return {"type": "http.request", "body": parts.pop(), "more_body": False}
        await asyncio.Event().wait()  # the client stays
        raise AssertionError

    return receive


def _slow_body(stop: asyncio.Event) -> Receive:
    """One byte, then nothing until ``stop``; then the client leaves."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"{", "more_body": True}
        await stop.wait()
        return {"type": "http.disconnect"}

    return receive


def test_slow_bodies_do_not_lock_complete_requests_out() -> None:
    """The issue's attack on a small plan (batch 1, queue 1): 10 clients send one byte of
    their body each. They do not count against the in-flight limit, so a complete request is
    answered; beyond the grace, 4 hold the slow-body slots (half of Serve's headroom of 8)
    and the other 6 are cut off at once with 408."""
    server, _, metrics = _server(max_batch_size=1, max_queued_requests=1, body_timeout_s=60)
    server.slow_bodies.grace_s = 0.05

    async def attack() -> tuple[int, list[int], int]:
        app = build_api(server)
        stop = asyncio.Event()
        slow = [asyncio.create_task(_call(server, app, _slow_body(stop))) for _ in range(10)]
        await asyncio.sleep(0)  # every slow request has sent its byte
        real = _status(await _call(server, app, _complete_body()))
        async with asyncio.timeout(30):
            while sum(task.done() for task in slow) < 6:  # past the grace, 6 find no slot
                await asyncio.sleep(0.01)
        held = server.slow_bodies.held
        stop.set()
        codes = [_status(await task) for task in slow]
        return real, codes, held

    real, codes, held = asyncio.run(attack())
    assert real == 200
    assert held == 4
    assert codes.count(408) == 6
    assert codes.count(499) == 4  # the ones that held a slot until their clients left
    assert server.slow_bodies.held == 0
    assert server.inflight == 0
    assert ("/v1/completions", 500) not in metrics.codes


def test_a_client_that_leaves_mid_body_is_a_499_not_a_500() -> None:
    server, _, metrics = _server()
    stop = asyncio.Event()
    stop.set()

    async def go() -> list[Message]:
        return await _call(server, build_api(server), _slow_body(stop))

    assert _status(asyncio.run(go())) == 499
    assert metrics.codes == [("/v1/completions", 499)]
    assert server.inflight == 0


def test_a_held_request_counts_in_flight_until_its_sequences_end() -> None:
    server, engine, _ = _server(max_batch_size=1, max_queued_requests=1)
    engine.hold = True

    async def go() -> tuple[int, int, list[int]]:
        app = build_api(server)
        first = [asyncio.create_task(_call(server, app, _complete_body())) for _ in range(2)]
        while len(engine.held) < 2:
            await asyncio.sleep(0.01)
        busy = _status(await _call(server, app, _complete_body()))
        inflight = server.inflight
        engine.finish_held()
        return busy, inflight, [_status(await task) for task in first]

    busy, inflight, codes = asyncio.run(go())
    assert busy == 429
    assert inflight == 2
    assert codes == [200, 200]
