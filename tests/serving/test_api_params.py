"""Request parameters through a real replica on Ray Serve: a top_k of 10**30 is a 400 naming it
while the requests beside it are served; vLLM's extensions reach the engine (ignore_eos gives
exactly max_tokens, repetition_penalty changes greedy text); guided decoding, a string
include_usage and an image part are refused in OpenAI's shape, by name."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ridgeline_dev.ray_apps import serve_apps

MODEL = "tiny-chat"


@pytest.fixture(scope="module")
def base(tiny_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    args = {
        "model_uri": tiny_uri,
        "model_name": MODEL,
        "compute_dtype": "float32",
        "max_context_tokens": 256,
        "gpus_per_replica": 0,
        "cache_dir": str(tmp_path_factory.mktemp("weights-cache")),
        "max_batch_size": 8,
    }
    with serve_apps({"params": ("/", args)}) as urls:
        yield urls["base"]


def post(base: str, body: dict[str, Any], chat: bool = False) -> httpx.Response:
    path = "/v1/chat/completions" if chat else "/v1/completions"
    return httpx.post(base + path, json={"model": MODEL, **body}, timeout=120)


def refused(resp: httpx.Response) -> tuple[str | None, str]:
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error["param"], str(error["message"])


def test_an_absurd_top_k_is_refused_and_its_batch_mates_are_served(base: str) -> None:
    mate = {"prompt": "the ridge", "max_tokens": 24, "temperature": 0}
    alone = post(base, mate).json()["choices"][0]["text"]
    with cf.ThreadPoolExecutor(4) as pool:
        mates = [pool.submit(post, base, mate) for _ in range(3)]
        streamed = pool.submit(post, base, {**mate, "stream": True})
        bad = post(base, {"prompt": "a", "max_tokens": 24, "top_k": 10**30})
        answers = [m.result() for m in mates]
        assert streamed.result().status_code == 200
        assert "error" not in streamed.result().text
    assert refused(bad)[0] == "top_k"
    assert [a.status_code for a in answers] == [200] * 3
    assert [a.json()["choices"][0]["text"] for a in answers] == [alone] * 3
    # the largest top_k taken is the vocabulary's, in the engine: the same as none
    seeded = {"prompt": "a", "max_tokens": 12, "temperature": 1.0, "seed": 5}
    big = post(base, {**seeded, "top_k": 2**31 - 1}).json()["choices"][0]["text"]
    assert big == post(base, seeded).json()["choices"][0]["text"]


def test_vllms_extensions_reach_the_engine(base: str) -> None:
    body = {"prompt": "the ridge", "max_tokens": 20, "temperature": 0}
    exact = post(base, {**body, "ignore_eos": True, "min_tokens": 20})
    assert exact.status_code == 200, exact.text
    assert exact.json()["usage"]["completion_tokens"] == 20
    plain = post(base, body).json()["choices"][0]["text"]
    penalized = post(base, {**body, "repetition_penalty": 2.0}).json()["choices"][0]["text"]
    assert penalized != plain
    assert refused(post(base, {**body, "min_tokens": 21}))[0] == "min_tokens"


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"guided_json": {"type": "object"}}, "guided_json", "not supported"),
        ({"guided_choice": ["a", "b"]}, "guided_choice", "not supported"),
        ({"stream": True, "stream_options": {"include_usage": "false"}}, None, "boolean"),
        ({"stop": ["x" * 4000, "y" * 97]}, "stop", "4096 characters"),
    ],
)
def test_what_is_not_honoured_is_refused_by_name(
    base: str, body: dict[str, Any], param: str | None, words: str
) -> None:
    got_param, message = refused(post(base, {"prompt": "a", "max_tokens": 4, **body}))
    assert got_param == (param or "stream_options.include_usage")
    assert words in message


def test_an_image_part_says_the_model_serves_text_only(base: str) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "what is it?"}, image]}]
    param, message = refused(post(base, {"messages": messages, "max_tokens": 4}, chat=True))
    assert param == "messages.0.content"
    assert "this model serves text only; image_url content parts are not supported" in message
