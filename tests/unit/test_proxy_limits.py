"""The request-head limits that ``proxy_limits.install`` puts into uvicorn, the server inside
Ray Serve's proxy: a uvicorn server made as Serve makes it (the ``auto`` protocol), on
loopback, against raw sockets: oversized heads get 431 (a huge one is cut off early), a head
that never completes gets 408, connections past the per-client bound get 503."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
import uvicorn.config

from ridgeline_serving import proxy_limits
from ridgeline_serving.proxy_limits import HeadLimits, LimitedHttpToolsProtocol


async def app(scope: dict[str, object], receive: object, send: object) -> None:
    assert callable(send)
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, int]]:
    monkeypatch.setitem(
        uvicorn.config.HTTP_PROTOCOLS, "auto", uvicorn.config.HTTP_PROTOCOLS["auto"]
    )
    monkeypatch.setattr(LimitedHttpToolsProtocol, "limits", LimitedHttpToolsProtocol.limits)
    monkeypatch.setenv(proxy_limits.HEADER_TIMEOUT_ENV, "30")
    assert proxy_limits.install() == []
    assert LimitedHttpToolsProtocol.limits.header_timeout_s == 30
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    # as Serve's proxy makes its server (http_util.start_asgi_http_server): no http= argument
    config = uvicorn.Config(app, lifespan="off", log_level="warning")
    uv = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(uv.serve(sockets=[sock]),))
    thread.start()
    while not uv.started:
        time.sleep(0.01)
    yield sock.getsockname()
    uv.should_exit = True
    thread.join(timeout=10)
    loop.close()
    sock.close()


def _connect(address: tuple[str, int]) -> socket.socket:
    return socket.create_connection(address, timeout=30)


def _status(sock: socket.socket) -> int:
    """One whole response's status (every response here has a Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    length = next(int(h.split(":")[1]) for h in lines if h.lower().startswith("content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return int(lines[0].split()[1])


def _get(extra: bytes = b"") -> bytes:
    return b"GET /health HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n"


def test_the_serving_image_sets_the_proxy_callback() -> None:
    dockerfile = Path(__file__).parents[2] / "images" / "serving" / "Dockerfile"
    ((name, value),) = proxy_limits.proxy_env().items()
    assert name == "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
    assert f"ENV {name}={value}\n" in dockerfile.read_text()


def test_a_head_within_the_budget_is_served(server: tuple[str, int]) -> None:
    with _connect(server) as sock:
        sock.sendall(_get(b"X-Pad: " + b"a" * 15_000 + b"\r\n"))
        assert _status(sock) == 200


def test_a_head_over_the_budget_is_431(server: tuple[str, int]) -> None:
    with _connect(server) as sock:
        sock.sendall(_get(b"X-Pad: " + b"a" * 17_000 + b"\r\n"))
        assert _status(sock) == 431


def test_many_headers_over_the_budget_are_431(server: tuple[str, int]) -> None:
    with _connect(server) as sock:
        sock.sendall(_get(b"".join(b"X-%d: %s\r\n" % (i, b"b" * 100) for i in range(200))))
        assert _status(sock) == 431


def test_a_huge_header_is_cut_off_long_before_it_ends(server: tuple[str, int]) -> None:
    """The issue's 64 MB header: the proxy answers 431 and closes after a few hundred KB."""
    sent = 0
    chunk = b"a" * 65536
    with _connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            while sent < 64 << 20:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert sent < 8 << 20
        try:
            status: int | None = _status(sock)
        except ConnectionResetError:  # the refusal arrived, then the reset (our unread bytes)
            status = None
        assert status in (431, None)


def test_a_head_that_never_completes_times_out_with_408(server: tuple[str, int]) -> None:
    LimitedHttpToolsProtocol.limits = HeadLimits(header_timeout_s=0.2)
    with _connect(server) as idle, _connect(server) as partial:
        partial.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        assert _status(partial) == 408
        assert _status(idle) == 408
        assert partial.recv(1) == b""  # closed


def test_a_kept_alive_connection_serves_its_next_request(server: tuple[str, int]) -> None:
    LimitedHttpToolsProtocol.limits = HeadLimits(header_timeout_s=0.2)
    with _connect(server) as sock:
        for _ in range(3):
            sock.sendall(_get())
            assert _status(sock) == 200
            time.sleep(0.3)  # idle between requests is the keep-alive timeout's, not this one


def test_connections_past_the_per_client_bound_get_503(server: tuple[str, int]) -> None:
    LimitedHttpToolsProtocol.limits = HeadLimits(max_connections_per_client=2)
    first, second = _connect(server), _connect(server)
    with _connect(server) as third:
        assert _status(third) == 503
    first.sendall(_get())
    assert _status(first) == 200
    first.close()
    second.close()
    codes = []
    for _ in range(100):  # until the server has seen the two closes
        with _connect(server) as again:
            again.sendall(_get())
            codes.append(_status(again))
        if codes[-1] == 200:
            break
        time.sleep(0.05)
    assert codes[-1] == 200
