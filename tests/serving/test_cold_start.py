"""A model scaled to zero on Ray Serve, whose replica starts slower than the wait bound: the
first request gets the proxy's 503 with Retry-After saying the model is starting, and a
request once the replica runs gets its answer."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from ridgeline_dev.ray_apps import BUILDER, serve_apps
from ridgeline_dev.slow_start_app import START_DELAY_S

MODEL = "tiny-chat"
WAIT_S, PREDICTED_S = 2.0, 10.0
assert WAIT_S < START_DELAY_S


@pytest.fixture(scope="module")
def server(tiny_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    args = {
        "model_uri": tiny_uri,
        "model_name": MODEL,
        "compute_dtype": "float32",
        "max_context_tokens": 256,
        "max_batch_size": 2,
        "gpus_per_replica": 0,
        "cache_dir": str(tmp_path_factory.mktemp("weights-cache")),
        "cold_start_wait_s": WAIT_S,
        "predicted_cold_start_s": PREDICTED_S,
        BUILDER: "ridgeline_dev.slow_start_app:build_app",
    }
    with serve_apps({"cold": ("/", args)}) as urls:
        yield urls


def test_a_request_waiting_on_a_cold_start_gets_503_then_a_later_one_its_answer(
    server: dict[str, str],
) -> None:
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 4}
    url = server["base"] + "/v1/completions"
    started = time.monotonic()
    first = httpx.post(url, json=body, timeout=120)
    waited = time.monotonic() - started
    assert first.status_code == 503, first.text
    error = first.json()["error"]
    assert error["code"] == "model_starting"
    assert "the model is starting" in error["message"]
    retry = int(first.headers["retry-after"])
    assert 1 <= retry <= PREDICTED_S
    assert waited >= WAIT_S  # cut at the bound, not before
    # The replica the first request asked for goes on starting; a client that retries as
    # told gets its answer once it runs (503s meanwhile say the same).
    deadline = time.monotonic() + 240
    while True:
        time.sleep(retry)
        answer = httpx.post(url, json=body, timeout=120)
        if answer.status_code == 200:
            break
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "model_starting"
        retry = int(answer.headers["retry-after"])
        assert time.monotonic() < deadline, "the replica never started"
    assert answer.json()["choices"][0]["text"]
    # With a replica running, Serve's own routes and the model's answer as before.
    assert httpx.get(server["base"] + "/v1/models", timeout=30).status_code == 200
