"""Limits on the HTTP request head in Ray Serve's proxy, which is the HTTP server here.

Serve's proxy runs uvicorn with its default HTTP protocol (httptools, since ray[serve] pulls
uvicorn[standard]) and exposes only ``keep_alive_timeout_s`` and ``request_timeout_s`` of it
(``http_util.start_asgi_http_server``); httptools has no header size limit, uvicorn no
timeout for a request head, and neither a bound on connections. So six 64 MB headers grew
the proxy by 1.1 GB and 21,000 connections that never finished their headers took every file
descriptor it had. Serve's one hook into its proxy is ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``
(a function called in each proxy before its server starts): ``install`` makes uvicorn's
``auto`` protocol this module's subclass of its httptools protocol, which adds

- a header budget: a request line and headers over ``max_header_bytes`` (h11's and Node's
  16 KiB) get 431; a head still arriving is cut off once it passes the budget, so it holds at
  most the budget plus one socket read (256 KiB) of memory;
- a header timeout: a connection whose request head is not complete ``header_timeout_s``
  after it opened (or after its next request began) gets 408 and is closed;
- connection bounds: past ``max_connections_per_client`` from one address, or
  ``max_connections`` in all (below the process's file limit), a new connection gets 503
  and is closed.

Refusals carry an OpenAI-shaped JSON error. The serving image sets the variable; the limits
may be changed through ``RIDGELINE_PROXY_*`` variables (``HeadLimits.from_env``). ``install``
also returns the proxy's middleware that bounds the wait for a starting model
(``cold_start_guard``).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import weakref
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import httptools
import uvicorn.config
from starlette.middleware import Middleware
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from ridgeline_serving.cold_start_guard import ColdStartBound, ColdStartGuard, env_for

CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK = "ridgeline_serving.proxy_limits:install"
MAX_HEADER_BYTES_ENV = "RIDGELINE_PROXY_MAX_HEADER_BYTES"
HEADER_TIMEOUT_ENV = "RIDGELINE_PROXY_HEADER_TIMEOUT_S"
PER_CLIENT_ENV = "RIDGELINE_PROXY_MAX_CONNECTIONS_PER_CLIENT"
# Behind an ingress or load balancer that does not keep the client's address, the ingress is
# one client: this stays above what an ingress keeps open to one backend (ingress-nginx keeps
# 320 idle connections per worker).
DEFAULT_PER_CLIENT = 4096


def _connection_bound() -> int:
    """Connections the proxy takes in all: its file limit less a reserve for its own files and
    Ray's sockets (a process with no limit is held to a million)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft > 1 << 20:
        soft = 1 << 20
    return max(64, soft - max(256, soft // 8))


@dataclass(frozen=True)
class HeadLimits:
    max_header_bytes: int = 16 * 1024
    header_timeout_s: float = 10.0
    max_connections_per_client: int = DEFAULT_PER_CLIENT
    max_connections: int = field(default_factory=_connection_bound)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HeadLimits:
        default = cls()
        return cls(
            int(env.get(MAX_HEADER_BYTES_ENV, default.max_header_bytes)),
            float(env.get(HEADER_TIMEOUT_ENV, default.header_timeout_s)),
            int(env.get(PER_CLIENT_ENV, default.max_connections_per_client)),
        )


class _HeadTooLargeError(Exception):
    pass


# connections per client address, per server (a process may run more than one)
_clients: weakref.WeakKeyDictionary[ServerState, Counter[str]] = weakref.WeakKeyDictionary()


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[HeadLimits] = HeadLimits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_open = False  # a request head has begun and is not complete
        self._began_here = False  # ... and began in the chunk being parsed
        self._head_bytes = 0  # whole chunks received while a head was open
        self._head_size = 0  # the parsed request line and headers
        self._refused = False
        self._timer: asyncio.TimerHandle | None = None
        self._host = self.client[0] if self.client else ""
        counts = _clients.setdefault(self.server_state, Counter())
        counts[self._host] += 1
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, f"the server holds {len(self.connections) - 1} connections")
        elif counts[self._host] > self.limits.max_connections_per_client:
            self._refuse(
                503,
                f"more than {self.limits.max_connections_per_client} connections from one address",
            )
        else:
            self._start_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        counts = _clients.get(self.server_state)
        if counts is not None:
            counts[self._host] -= 1
            if counts[self._host] <= 0:
                del counts[self._host]
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadTooLargeError):
                self._refuse(431, self._too_large())
                return
            self._invalid()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            self._invalid()
            return
        if self._head_open:
            if self._began_here:  # part of this chunk may be the last request's body
                self._began_here = False
            else:
                self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(431, self._too_large())

    # ---- the parser's callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open, self._began_here = True, True
        self._head_bytes = self._head_size = 0
        if self._timer is None:
            self._start_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._count(len(name) + len(value) + 4)  # ": " and CRLF

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._stop_timer()
        super().on_headers_complete()

    # ---- helpers -----------------------------------------------------------------------------

    def _count(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self.limits.max_header_bytes:
            raise _HeadTooLargeError

    def _too_large(self) -> str:
        return (
            f"request line and headers over {self.limits.max_header_bytes} bytes; "
            "this server accepts at most that"
        )

    def _start_timer(self) -> None:
        self._timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        self._refuse(408, f"request headers not received within {self.limits.header_timeout_s:g} s")

    def _invalid(self) -> None:
        self._refuse(400, "invalid HTTP request")

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` (unless a response is under way) and close the connection."""
        self._refused = True
        self._stop_timer()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            error = {"message": message, "type": "invalid_request_error", "code": None}
            body = json.dumps({"error": error}).encode()
            head = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            head += [
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n",
            ]
            if status == 503:
                head.append(b"retry-after: 1\r\n")
            self.transport.write(b"".join(head) + b"\r\n" + body)
        self.transport.close()


def install() -> list[Middleware]:
    """Serve's proxy callback: uvicorn's ``auto`` HTTP protocol becomes the limited one (the
    proxy's server is made after this runs), and where the environment bounds the wait for a
    starting model, the proxy's one middleware enforces it (``cold_start_guard``)."""
    LimitedHttpToolsProtocol.limits = HeadLimits.from_env(os.environ)
    uvicorn.config.HTTP_PROTOCOLS["auto"] = f"{__name__}:LimitedHttpToolsProtocol"
    bound = ColdStartBound.from_env(os.environ)
    return [] if bound is None else [Middleware(ColdStartGuard, bound=bound)]


def proxy_env(
    cold_start_wait_s: float | None = None, predicted_cold_start_s: float | None = None
) -> dict[str, str]:
    """The environment a process that starts Ray gives it, so its Serve proxies call
    ``install`` (the serving image sets the same in its ``ENV``) with the wait bound for a
    starting model, if any (``ServingArgs.cold_start_wait_s``)."""
    return {CALLBACK_ENV: CALLBACK, **env_for(cold_start_wait_s, predicted_cold_start_s)}
