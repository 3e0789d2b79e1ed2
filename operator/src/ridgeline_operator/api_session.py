"""kopf's connection to the API server, with a bounded connection pool.

kopf's own session opens a new TLS connection for every request it cannot put on an idle one
(``TCPConnector(limit=0)``). At start-up, a thousand models resume at once, each with a status
patch in flight: the operator held about 700 connections, and Python's asyncio keeps a
256 KiB read buffer per TLS connection (``asyncio.sslproto``), 175 MB of the operator's
480 MB peak (memray, ``make bench`` with BENCH_MEMRAY), and as many TLS handshakes. A bounded
pool makes the surplus requests wait for a free connection instead: the API server answers
them no later, and the handshakes are done once.

The credentials are kopf's own (``login_via_client``: in-cluster service account, else the
kubeconfig), only the session is ours. Watches hold one connection each for as long as they
run; the limit leaves room beside them."""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import kopf

# Connections to the API server: the watches (InferenceModels, Nodes, RayServices,
# RayClusters) hold one each, the rest carry kopf's patches and Events (0: no limit, kopf's own).
API_CONNECTIONS = int(os.environ.get("RIDGELINE_API_CONNECTIONS", "24"))


@kopf.on.login()
async def login(*, logger: Any, settings: kopf.OperatorSettings, **_: Any) -> kopf.AiohttpSession:
    info = kopf.login_via_client(logger=logger, settings=settings)
    if info is None:  # the kubernetes client is a dependency of the operator: not expected
        raise kopf.LoginError("the kubernetes client library is not installed")
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=API_CONNECTIONS, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        server=info.server,
        default_namespace=info.default_namespace,
        expiration=info.expiration,
        priority=info.priority,
        aiohttp_session=session,
    )
