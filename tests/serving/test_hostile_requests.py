"""Hostile clients against a real replica on Ray Serve: huge and slow bodies, prompts too long to
tokenize, and clients that go away under load. Each must cost the replica a bounded amount and
leave /health and the next well-behaved request unharmed."""

from __future__ import annotations

import concurrent.futures as cf
import json
import socket
import time
import urllib.request
from collections.abc import Iterator

import httpx
import pytest

from ridgeline_dev.ray_apps import serve_apps
from ridgeline_serving.http_limits import RequestLimits

MODEL = "tiny-chat"
CONTEXT = 256
BATCH, QUEUE = 4, 60  # admission: 64 requests in flight per replica
BODY_TIMEOUT_S = 2.0
LIMITS = RequestLimits.for_context(CONTEXT, BODY_TIMEOUT_S)


@pytest.fixture(scope="module")
def server(tiny_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    args = {
        "model_uri": tiny_uri,
        "model_name": MODEL,
        "compute_dtype": "float32",
        "max_context_tokens": CONTEXT,
        "gpus_per_replica": 0,
        "cache_dir": str(tmp_path_factory.mktemp("weights-cache")),
        "max_batch_size": BATCH,
        "max_queued_requests": QUEUE,
        "body_timeout_s": BODY_TIMEOUT_S,
    }
    with serve_apps({"hostile": ("/", args)}) as urls:
        yield urls


@pytest.fixture
def base(server: dict[str, str]) -> str:
    return server["base"]


def _gauge(server: dict[str, str], name: str) -> float | None:
    text = urllib.request.urlopen(server["metrics"], timeout=5).read().decode()
    values = [float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith(name)]
    return max(values) if values else None


def _open(base: str, length: int, first: bytes = b"{") -> socket.socket:
    """A POST whose headers promise ``length`` bytes, of which only ``first`` is sent."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(
        f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n".encode()
        + first
    )
    return sock


def _response(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, object]]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    while len(rest) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(lines[0].split()[1]), headers, json.loads(rest or b"{}")


def _health_s(base: str) -> float:
    began = time.monotonic()
    with urllib.request.urlopen(base + "/health", timeout=10) as resp:
        assert resp.status == 200
    return time.monotonic() - began


def _complete(base: str, prompt: str = "hello", max_tokens: int = 4) -> httpx.Response:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    return httpx.post(base + "/v1/completions", json=body, timeout=60)


def test_a_huge_body_is_refused_413_before_it_is_read(base: str) -> None:
    began = time.monotonic()
    with _open(base, 50_000_000) as sock:
        status, _, body = _response(sock)
    assert status == 413
    error = body["error"]
    assert isinstance(error, dict)
    assert str(LIMITS.max_body_bytes) in str(error["message"])
    assert error["code"] == "request_too_large"
    assert time.monotonic() - began < 5


def test_a_chunked_body_is_cut_off_at_the_limit(base: str) -> None:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        piece = b"x" * 65536
        sent = 0
        try:
            while sent < 4 * LIMITS.max_body_bytes:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
        except OSError:
            pass  # the server answered and closed: the rest is never read
        status, _, _ = _response(sock)
    assert status == 413


def test_a_prompt_longer_than_the_context_can_hold_is_refused_before_tokenizing(
    base: str,
) -> None:
    resp = _complete(base, "a" * (LIMITS.max_prompt_chars + 1))
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["param"] == "prompt"
    assert error["code"] == "context_length_exceeded"
    assert str(LIMITS.max_prompt_chars) in error["message"]
    chat = httpx.post(
        base + "/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "b" * (LIMITS.max_prompt_chars + 1)}],
        },
        timeout=60,
    )
    assert chat.status_code == 400
    assert chat.json()["error"]["param"] == "messages"


def test_a_slow_body_gets_408_and_frees_its_slot(base: str) -> None:
    began = time.monotonic()
    with _open(base, 1000) as sock:
        status, _, body = _response(sock)
    waited = time.monotonic() - began
    assert status == 408
    assert "2 s" in str(body["error"])
    assert BODY_TIMEOUT_S <= waited < BODY_TIMEOUT_S + 5
    assert _complete(base).status_code == 200


def test_slow_bodies_do_not_lock_complete_requests_out_and_health_answers(base: str) -> None:
    """The issue's attack: 64 clients (batch + queue) each send one byte of a 1 MB body. A body
    counts against the in-flight limit only once complete, so a complete request is answered
    meanwhile; past the 1 s grace, 4 slow bodies keep the slow-body slots (half of Serve's
    headroom of 8) and the other 60 are cut off at once with 408, the 4 at the body timeout;
    /health answers all along; afterwards the replica serves as before."""
    socks = [_open(base, 1_000_000) for _ in range(BATCH + QUEUE)]
    try:
        time.sleep(0.5)  # every one of them has reached the replica
        answered = _complete(base)
        assert answered.status_code == 200, answered.text
        latencies = [_health_s(base) for _ in range(5)]
        assert max(latencies) < 1.0, latencies
        answers = [_response(sock) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    assert [status for status, _, _ in answers] == [408] * len(socks)
    cut = [body for _, _, body in answers if "slower bodies" in str(body["error"])]
    assert len(cut) == len(socks) - 4
    assert _complete(base).status_code == 200


def test_sixty_clients_that_go_away_leave_no_backlog(server: dict[str, str], base: str) -> None:
    """60 long requests whose clients leave after a moment: their sequences are cancelled, they
    leave the queue when the engine has dropped them, and the next request is served as fast
    as on an idle replica."""
    baseline = min(_timed(base) for _ in range(3))

    def leave(i: int) -> str:
        body = {"model": MODEL, "prompt": f"go {i}", "max_tokens": 240, "temperature": 0}
        try:
            return str(httpx.post(base + "/v1/completions", json=body, timeout=0.5).status_code)
        except httpx.TimeoutException:
            return "left"

    with cf.ThreadPoolExecutor(60) as pool:
        outcomes = list(pool.map(leave, range(60)))
    assert outcomes.count("left") >= 50, outcomes
    # the engine drops them, and only then do they leave the queue
    deadline = time.monotonic() + 30
    seen: list[float | None] = []
    while time.monotonic() < deadline:
        seen = [
            _gauge(server, "ray_ridgeline_running_sequences"),
            _gauge(server, "ray_ridgeline_waiting_sequences"),
            _gauge(server, "ray_ridgeline_queue_depth"),
        ]
        if seen == [0.0, 0.0, 0.0]:
            break
        time.sleep(0.25)
    assert seen == [0.0, 0.0, 0.0]
    began = time.monotonic()
    # all 64 places are free again: a burst of 64 is admitted, none answered 429
    with cf.ThreadPoolExecutor(BATCH + QUEUE) as pool:
        codes = list(pool.map(lambda _: _complete(base, max_tokens=1).status_code, range(64)))
    assert codes == [200] * 64, codes
    after = _timed(base)
    assert after < max(5 * baseline, 2.0), (after, baseline, time.monotonic() - began)


def _timed(base: str) -> float:
    began = time.monotonic()
    assert _complete(base, max_tokens=8).status_code == 200
    return time.monotonic() - began
