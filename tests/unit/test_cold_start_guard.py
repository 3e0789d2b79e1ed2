"""The proxy middleware that bounds the wait for a starting model (``cold_start_guard``), on a
fake clock: a request that arrives with no running replica gets 503 with Retry-After once the
bound passes before its response began, and its waiting request is cancelled; a response that
began, a request that arrived while a replica ran, and Serve's own routes are never cut."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from ridgeline_serving import proxy_limits
from ridgeline_serving.cold_start_guard import (
    CODE,
    PREDICTED_ENV,
    WAIT_ENV,
    ColdStartBound,
    ColdStartGuard,
    Message,
    Scope,
    running_replicas,
    serve_replica_view,
)

BOUND = ColdStartBound(wait_s=2.0, predicted_s=10.0)


class FakeTime:
    """A clock that moves only when a wait times out, by the whole timeout."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        for _ in range(20):  # the app runs until it blocks
            await asyncio.sleep(0)
        self.waits.append(timeout)
        if not event.is_set():
            self.now += timeout
        return event.is_set()


class App:
    """An app that answers after ``gate`` opens (never, unless the test opens it)."""

    def __init__(self, start_first: bool = False) -> None:
        self.gate = asyncio.Event()
        self.start_first = start_first
        self.cancelled = False

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        try:
            if self.start_first:
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"a", "more_body": True})
            await self.gate.wait()
            if not self.start_first:
                await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"done"})
        except asyncio.CancelledError:
            self.cancelled = True
            raise


def _run(
    app: App, replicas: int | None, path: str = "/v1/completions", open_after_s: float = 0
) -> tuple[list[Message], FakeTime]:
    fake = FakeTime()
    guard = ColdStartGuard(app, BOUND, lambda scope: replicas, fake.clock, fake.wait)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def go() -> None:
        call = asyncio.ensure_future(guard({"type": "http", "path": path}, receive, send))
        for _ in range(40):
            await asyncio.sleep(0)
        fake.now += open_after_s  # the app's long work, on the fake clock
        app.gate.set()
        await call

    asyncio.run(go())
    return sent, fake


def _headers(start: Message) -> dict[bytes, bytes]:
    return dict(start["headers"])


def test_no_running_replica_and_no_answer_within_the_bound_is_a_503_saying_why() -> None:
    app = App()
    sent, fake = _run(app, replicas=0)
    assert fake.waits == [BOUND.wait_s]
    assert app.cancelled  # taken out of Serve's queue
    start, body = sent  # nothing of the cancelled request follows the 503
    assert start["status"] == 503
    headers = _headers(start)
    assert headers[b"retry-after"] == b"8"  # the predicted 10 s less the 2 s waited
    error = json.loads(body["body"])["error"]
    assert error["code"] == CODE
    assert error["message"].startswith("the model is starting")
    assert "retry after 8 s" in error["message"]
    assert int(headers[b"content-length"]) == len(body["body"])


def test_an_answer_that_begins_within_the_bound_is_not_cut_however_long_it_runs() -> None:
    app = App(start_first=True)
    sent, _ = _run(app, replicas=0, open_after_s=10 * BOUND.wait_s)
    assert not app.cancelled
    assert [m.get("status") for m in sent[:1]] == [200]
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"adone"


@pytest.mark.parametrize("replicas", [1, None])
def test_a_request_that_arrives_while_a_replica_runs_or_unknown_is_never_cut(
    replicas: int | None,
) -> None:
    app = App()
    sent, fake = _run(app, replicas=replicas, open_after_s=10 * BOUND.wait_s)
    assert fake.waits == []  # not bounded at all
    assert not app.cancelled
    assert sent[0]["status"] == 200


def test_serves_own_routes_are_not_guarded() -> None:
    app = App()
    sent, fake = _run(app, replicas=0, path="/-/healthz")
    assert fake.waits == []
    assert sent[0]["status"] == 200


def test_retry_after_is_at_least_a_second() -> None:
    assert ColdStartBound(50, 20).retry_after(50) == 1
    assert BOUND.retry_after(2.0) == 8
    assert BOUND.retry_after(2.5) == 8  # rounded up


def test_the_bound_from_the_environment_and_back() -> None:
    assert ColdStartBound.from_env({}) is None
    env = proxy_limits.proxy_env(50.0, 33.4)
    assert env[WAIT_ENV] == "50"
    assert env[PREDICTED_ENV] == "33.4"
    assert ColdStartBound.from_env(env) == ColdStartBound(50.0, 33.4)
    assert ColdStartBound.from_env({WAIT_ENV: "5"}) == ColdStartBound(5.0, 5.0)
    assert WAIT_ENV not in proxy_limits.proxy_env()
    for bad in ("0", "-1", "nan", "inf"):
        with pytest.raises(ValueError, match="positive number of seconds"):
            ColdStartBound.from_env({WAIT_ENV: bad})


def test_install_returns_the_guard_only_where_a_bound_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvicorn.config

    from ridgeline_serving.proxy_limits import LimitedHttpToolsProtocol

    monkeypatch.setitem(
        uvicorn.config.HTTP_PROTOCOLS, "auto", uvicorn.config.HTTP_PROTOCOLS["auto"]
    )
    monkeypatch.setattr(LimitedHttpToolsProtocol, "limits", LimitedHttpToolsProtocol.limits)
    monkeypatch.delenv(WAIT_ENV, raising=False)
    assert proxy_limits.install() == []
    monkeypatch.setenv(WAIT_ENV, "3")
    monkeypatch.setenv(PREDICTED_ENV, "9")
    (middleware,) = proxy_limits.install()
    assert middleware.cls is ColdStartGuard
    assert middleware.kwargs == {"bound": ColdStartBound(3.0, 9.0)}


def _handle(request_router: Any = None, running: Any = ()) -> Any:
    router = SimpleNamespace(_request_router=request_router, _running_replicas=running)
    return SimpleNamespace(_router=SimpleNamespace(_asyncio_router=router))


def test_running_replicas_as_serves_router_holds_them() -> None:
    assert running_replicas(_handle(SimpleNamespace(curr_replicas={"a": 1, "b": 2}))) == 2
    assert running_replicas(_handle(running=["a"])) == 1
    assert running_replicas(_handle(running=None)) == 0  # the controller sent none yet
    assert running_replicas(SimpleNamespace()) is None  # laid out otherwise: never cut
    assert running_replicas(SimpleNamespace(_router=None)) is None


def test_the_view_finds_serves_proxy_router_through_the_wrapped_app() -> None:
    routes = {"/": _handle(running=[]), "/other": _handle(running=["r"])}

    class ProxyRouter:
        def match_route(self, path: str) -> Any:
            route = "/other" if path.startswith("/other") else "/"
            return route, routes[route], False

    proxy = SimpleNamespace(proxy_router=ProxyRouter())
    view = serve_replica_view(SimpleNamespace(app=proxy))  # Serve's request-id middleware
    assert view({"path": "/v1/completions"}) == 0
    assert view({"path": "/other/v1/completions"}) == 1
    assert view({"path": "/x/other/v1", "root_path": "/x"}) == 1
    assert view({"path": "/"}) == 0
    serves = serve_replica_view(SimpleNamespace(_app=proxy))  # Serve keeps it as _app
    assert serves({"path": "/other/v1"}) == 1
    assert serve_replica_view(SimpleNamespace(app=None))({"path": "/"}) is None
