"""``ridgeline serve --host 127.0.0.1``: every listener of the local Ray and Serve on loopback,
not only the HTTP proxy that ``--host`` configures."""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import Any

# Ray's worker_process_setup_hook, a module path each Ray worker imports and calls at start.
SETUP_HOOK = "ridgeline_serving.loopback.replica_grpc_on_loopback"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is this machine's loopback only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def metrics_host(host: str) -> str:
    """Where the metrics answer: loopback for a loopback or wildcard host, else the host."""
    if is_loopback(host) or host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def keep_ray_on_loopback() -> dict[str, Any]:
    """Put Ray's own listeners on loopback; returns the runtime_env for ``ray.init`` that does
    the same for Serve's replicas.

    Ray binds its metrics export, GCS, raylet and agents to its node IP, which on Linux it never
    takes to be loopback (it resolves 127.0.0.1 to the machine's address) unless multi-node
    clusters are switched off, as they are on macOS and Windows: this sets that switch. Ray
    reads it at import, so this runs before ``import ray``; Ray's processes inherit it."""
    if "ray" in sys.modules:
        raise RuntimeError("keep_ray_on_loopback must run before ray is imported")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return {"worker_process_setup_hook": SETUP_HOOK}


def replica_grpc_on_loopback() -> None:
    """Rebind Serve's replica gRPC server from every address to loopback, in a Ray worker.

    Each replica opens an inter-deployment gRPC server on ``[::]:0`` (Ray 2.60,
    ray/serve/_private/replica.py ``_on_initialized``), which no option or environment variable
    changes; the replica module's binding helper is wrapped so that this one address becomes
    127.0.0.1, the node IP that keep_ray_on_loopback gives Ray. Where a Ray version lacks the
    helper this does nothing, and tests/serving/test_local_serve.py sees the wildcard again."""
    try:
        from ray.serve._private import replica
    except ImportError:
        return
    bind = getattr(replica, "add_port_to_grpc_server", None)
    if bind is None or getattr(bind, "_ridgeline_loopback", False):
        return

    def on_loopback(server: Any, address: str) -> Any:
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address.removeprefix("[::]:")
        return bind(server, address)

    on_loopback._ridgeline_loopback = True  # type: ignore[attr-defined]
    setattr(replica, "add_port_to_grpc_server", on_loopback)  # noqa: B010 - not exported
