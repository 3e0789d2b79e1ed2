"""A bound on how long a request waits for a model whose replicas are all still starting.

Scaling from zero (``replicas.min: 0``), or a cluster that has just been made, leaves a request
in Serve's proxy and router with no replica to take it and no timeout until one has started:
for a 70B model, minutes, and clients and load balancers give up with their own 504s first.
This ASGI middleware runs in the proxy (``proxy_limits.install`` returns it) and, for a
request that arrives while its application has no running replica, answers 503 with
``Retry-After`` (the predicted cold start less the time waited) and an OpenAI-shaped error
``model_starting`` once the wait bound passes before the response has begun; the waiting
request is cancelled, which takes it out of Serve's queue. A request that arrives while a
replica runs is never cut, nor is a response once it has begun.

The bound and the prediction come from the environment (``WAIT_ENV``, ``PREDICTED_ENV``): the
operator puts them on the Ray pods from the plan, ``ridgeline serve`` from its arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

WAIT_ENV = "RIDGELINE_COLD_START_WAIT_S"
PREDICTED_ENV = "RIDGELINE_PREDICTED_COLD_START_S"
CODE = "model_starting"

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# Running replicas of the application a request's path goes to: None where not known (no
# such route, or a Serve whose internals differ), and then the request is never cut.
ReplicaView = Callable[[Scope], "int | None"]
# Waits for the event for at most the timeout; True if it was set.
Waiter = Callable[[asyncio.Event, float], Awaitable[bool]]


@dataclass(frozen=True)
class ColdStartBound:
    wait_s: float  # the longest a request waits for a starting replica
    predicted_s: float  # the predicted cold start of a replica

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ColdStartBound | None:
        """The bound the environment sets, or None where it sets none."""
        wait = env.get(WAIT_ENV, "").strip()
        if not wait:
            return None
        wait_s = float(wait)
        predicted_s = float(env.get(PREDICTED_ENV, "").strip() or wait_s)
        if not (math.isfinite(wait_s) and wait_s > 0 and math.isfinite(predicted_s)):
            raise ValueError(f"{WAIT_ENV}={wait!r}: a positive number of seconds is needed")
        return cls(wait_s, predicted_s)

    def retry_after(self, waited_s: float) -> int:
        """Seconds the client should wait before trying again: at least 1."""
        return max(1, math.ceil(self.predicted_s - waited_s))


def env_for(wait_s: float | None, predicted_s: float | None) -> dict[str, str]:
    """The environment that sets the bound (none where there is no bound)."""
    if wait_s is None:
        return {}
    env = {WAIT_ENV: f"{wait_s:g}"}
    if predicted_s is not None:
        env[PREDICTED_ENV] = f"{predicted_s:g}"
    return env


def starting_response(bound: ColdStartBound, waited_s: float) -> tuple[list[Message], int]:
    """The ASGI messages of the 503, and its Retry-After."""
    retry = bound.retry_after(waited_s)
    message = (
        f"the model is starting: no replica was running when this request arrived, and none "
        f"answered within {bound.wait_s:g} s (a replica's predicted cold start is "
        f"{bound.predicted_s:g} s); retry after {retry} s"
    )
    body = json.dumps(
        {"error": {"message": message, "type": "server_error", "param": None, "code": CODE}}
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry).encode()),
    ]
    start = {"type": "http.response.start", "status": 503, "headers": headers}
    return [start, {"type": "http.response.body", "body": body}], retry


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
    return event.is_set()


class ColdStartGuard:
    """ASGI middleware: the bound on the wait for a starting model (see the module)."""

    def __init__(
        self,
        app: ASGIApp,
        bound: ColdStartBound,
        replicas: ReplicaView | None = None,
        clock: Callable[[], float] = time.monotonic,
        wait: Waiter = _wait,
    ) -> None:
        self.app = app
        self.bound = bound
        # Serve's proxy, reached through the app it wraps, where no view is given.
        self.replicas = replicas or serve_replica_view(app)
        self.clock = clock
        self.wait = wait

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Serve's own routes (/-/healthz, /-/routes) answer without a replica.
        internal = scope.get("path", "").startswith("/-/")
        if scope["type"] != "http" or internal or self.replicas(scope) != 0:
            await self.app(scope, receive, send)
            return
        arrived = self.clock()
        started = asyncio.Event()
        cut = False

        async def guarded_send(message: Message) -> None:
            if cut:  # the 503 went out: what the cancelled request still sends is dropped
                return
            if message["type"] == "http.response.start":
                started.set()
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, guarded_send))
        task.add_done_callback(lambda _: started.set())  # an app that ends without answering
        try:
            if not await self.wait(started, self.bound.wait_s) and not task.done():
                cut = True
                # Serve's response generator cancels the request in its router when cancelled.
                task.cancel()
                messages, _ = starting_response(self.bound, self.clock() - arrived)
                for message in messages:
                    await send(message)
        except BaseException:
            task.cancel()  # the server stops this request: so does the request it waits on
            raise
        try:
            await task
        except (Exception, asyncio.CancelledError):
            if not cut:  # after the 503, how the cancelled request ended is of no concern
                raise


def _serve_proxy_router(app: Any) -> Any:
    """Serve's ProxyRouter, from the ASGI app the proxy gives its middlewares (Serve's
    request-id middleware, which keeps it as ``_app``, around its HTTPProxy: Ray 2.60's
    ``start_asgi_http_server``)."""
    for _ in range(8):
        router = getattr(app, "proxy_router", None)
        if router is not None:
            return router
        app = getattr(app, "app", None) or getattr(app, "_app", None)
        if app is None:
            return None
    return None


def running_replicas(handle: Any) -> int | None:
    """Replicas the proxy's handle can route to now (its router's replica set, which Serve's
    controller pushes), or None where the handle is not laid out as in Ray 2.60."""
    router = getattr(getattr(handle, "_router", None), "_asyncio_router", None)
    if router is None:
        return None
    request_router = getattr(router, "_request_router", None)
    if request_router is not None:
        return len(request_router.curr_replicas)
    # No request routed yet: the replicas the controller sent so far (none before its first
    # update, when a request waits too).
    if not hasattr(router, "_running_replicas"):
        return None
    return len(router._running_replicas or ())


def serve_replica_view(app: Any) -> ReplicaView:
    """The running replicas of a request's application, as Serve's proxy sees them."""
    proxy_router = _serve_proxy_router(app)
    if proxy_router is None:
        log.warning(
            "Serve's proxy router not found: requests waiting on a cold start are unbounded"
        )

    def view(scope: Scope) -> int | None:
        if proxy_router is None:
            return None
        path: str = scope.get("path", "")[len(scope.get("root_path", "")) :]
        matched = proxy_router.match_route(path)
        if matched is None:
            return None
        return running_replicas(matched[1])

    return view
