"""The agent's settings, from its environment (the chart's DaemonSet sets them):

- ``NODE_NAME`` (required): this node's name (the downward API's ``spec.nodeName``).
- ``RIDGELINE_NODE_CACHE_NAMESPACE`` (required): where the agent writes its report ConfigMap
  (the operator's namespace).
- ``RIDGELINE_NODE_CACHE_ROOT``: the node root, mounted (hostPath) at the same path in the
  agent's pod; default ``/var/lib/ridgeline/weights``.
- ``RIDGELINE_NODE_CACHE_BUDGET_BYTES``: the size budget (bytes, or a quantity such as
  ``500Gi``); ``0`` (default): no budget but the disk's free space.
- ``RIDGELINE_NODE_CACHE_GRACE_S``: how long a checkpoint no model needs, or a version
  ``current`` no longer names, stays before it is deleted; default 3600.
- ``RIDGELINE_NODE_CACHE_RESYNC_S``: seconds between passes; default 30.
- ``RIDGELINE_NODE_CACHE_METRICS_PORT``: the Prometheus port (``/metrics``); default 9450,
  ``0`` serves none.
- ``RIDGELINE_NODE_CACHE_PARALLEL``: parallel ranged reads of one download; default 8.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ridgeline.api.node_cache import DEFAULT_ROOT, METRICS_PORT
from ridgeline.quantity import parse_quantity
from ridgeline.storage.download import PARALLEL


class SettingsError(ValueError):
    """A missing or malformed variable; the message names it."""


@dataclass(frozen=True)
class Settings:
    node: str
    namespace: str
    root: Path
    budget_bytes: int  # 0: none
    grace_s: float
    resync_s: float
    metrics_port: int
    parallel: int


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SettingsError(f"{name} is not set")
    return value


def _number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{name}={text!r} is not a number") from None
    if value < minimum:
        raise SettingsError(f"{name}={text!r} is below {minimum:g}")
    return value


def _bytes(env: Mapping[str, str], name: str) -> int:
    text = env.get(name, "").strip()
    if not text:
        return 0
    try:
        value = int(parse_quantity(text))
    except ValueError:
        raise SettingsError(f"{name}={text!r} is not a byte count or quantity") from None
    if value < 0:
        raise SettingsError(f"{name}={text!r} is negative")
    return value


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """The settings from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    return Settings(
        node=_required(env, "NODE_NAME"),
        namespace=_required(env, "RIDGELINE_NODE_CACHE_NAMESPACE"),
        root=Path(env.get("RIDGELINE_NODE_CACHE_ROOT", "").strip() or DEFAULT_ROOT),
        budget_bytes=_bytes(env, "RIDGELINE_NODE_CACHE_BUDGET_BYTES"),
        grace_s=_number(env, "RIDGELINE_NODE_CACHE_GRACE_S", 3600.0, 0.0),
        resync_s=_number(env, "RIDGELINE_NODE_CACHE_RESYNC_S", 30.0, 1.0),
        metrics_port=int(_number(env, "RIDGELINE_NODE_CACHE_METRICS_PORT", METRICS_PORT, 0)),
        parallel=int(_number(env, "RIDGELINE_NODE_CACHE_PARALLEL", PARALLEL, 1)),
    )
