"""The replica's request limits on their own: sizes derived from the context, the body read
within its size and time (and a slow body within the slow-body slots), the JSON parsed or
refused in one line."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.requests import ClientDisconnect

from ridgeline_serving.http_limits import (
    ClientGoneError,
    RequestLimits,
    SlowBodies,
    parse_json,
    read_body,
)
from ridgeline_serving.openai_api import ApiError

LIMITS = RequestLimits.for_context(512, 0.2)


class FakeRequest:
    def __init__(
        self,
        chunks: list[bytes],
        headers: dict[str, str],
        pause_s: float = 0,
        leaves: bool = False,
    ) -> None:
        self.chunks = chunks
        self.headers = headers
        self.pause_s = pause_s
        self.leaves = leaves
        self.read = 0

    async def stream(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            await asyncio.sleep(self.pause_s)
            self.read += 1
            yield chunk
        if self.leaves:
            raise ClientDisconnect


def _read(request: FakeRequest, slow: SlowBodies | None = None) -> bytes:
    return asyncio.run(read_body(request, LIMITS, slow or SlowBodies(4)))


def test_limits_follow_the_context() -> None:
    assert LIMITS.max_prompt_chars == 512 * 32
    assert LIMITS.max_body_bytes == 512 * 32 * 6 + (1 << 20)
    big = RequestLimits.for_context(131072, 10)
    assert big.max_body_bytes == 25 << 20  # 24 MiB of escaped prompt + 1 MiB


def test_a_body_within_the_limits_is_read_whole() -> None:
    assert _read(FakeRequest([b'{"a":', b" 1}"], {})) == b'{"a": 1}'


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    request = FakeRequest([b"x"], {"content-length": "50000000"})
    with pytest.raises(ApiError) as err:
        _read(request)
    assert err.value.status == 413
    assert str(LIMITS.max_body_bytes) in str(err.value)
    assert request.read == 0


def test_an_undeclared_body_is_cut_off_where_it_passes_the_limit() -> None:
    chunk = b"x" * (1 << 20)
    request = FakeRequest([chunk] * 50, {})
    with pytest.raises(ApiError) as err:
        _read(request)
    assert err.value.status == 413
    assert request.read == 2


def test_a_slow_body_times_out_with_408() -> None:
    request = FakeRequest([b"{"] * 100, {}, pause_s=0.05)
    with pytest.raises(ApiError) as err:
        _read(request)
    assert err.value.status == 408
    assert err.value.body["error"]["code"] == "request_timeout"
    assert request.read < 100


def test_a_body_past_its_grace_takes_a_slow_slot_and_gives_it_back() -> None:
    slow = SlowBodies(1, grace_s=0.01)
    assert _read(FakeRequest([b"{", b"}"], {}, pause_s=0.05), slow) == b"{}"
    assert slow.held == 0


def test_a_body_past_its_grace_with_no_slow_slot_is_cut_off_with_408() -> None:
    slow = SlowBodies(1, grace_s=0.01, held=1)  # another slow body holds the only slot
    request = FakeRequest([b"{"] * 100, {}, pause_s=0.05)
    with pytest.raises(ApiError) as err:
        _read(request, slow)
    assert err.value.status == 408
    assert "slower bodies" in str(err.value)
    assert request.read < 100
    assert slow.held == 1


def test_a_client_that_leaves_mid_body_is_no_error_of_ours() -> None:
    slow = SlowBodies(1, grace_s=0.01)
    with pytest.raises(ClientGoneError):
        _read(FakeRequest([b"{"], {}, pause_s=0.05, leaves=True), slow)
    assert slow.held == 0


def test_prompt_check_names_the_parameter() -> None:
    LIMITS.check_prompt(LIMITS.max_prompt_chars, "prompt")
    with pytest.raises(ApiError) as err:
        LIMITS.check_prompt(LIMITS.max_prompt_chars + 1, "messages")
    assert err.value.status == 400
    assert err.value.body["error"]["param"] == "messages"


@pytest.mark.parametrize(
    "raw", [b"{", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000], ids=["cut", "binary", "deep"]
)
def test_json_that_cannot_be_read_is_a_400(raw: bytes) -> None:
    with pytest.raises(ApiError) as err:
        parse_json("application/json", raw)
    assert err.value.status == 400


def test_json_must_be_declared() -> None:
    assert parse_json("application/json; charset=utf-8", b"{}") == {}
    # media types are case-insensitive (RFC 9110 8.3.1)
    assert parse_json("APPLICATION/JSON", b"{}") == {}
    assert parse_json("Application/Json; Charset=UTF-8", b"{}") == {}
    with pytest.raises(ApiError, match="text/plain"):
        parse_json("text/plain", b"{}")
