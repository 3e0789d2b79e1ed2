"""The agent's settings from its environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from ridgeline_serving.node_cache.settings import SettingsError, from_env

BASE = {"NODE_NAME": "node-1", "RIDGELINE_NODE_CACHE_NAMESPACE": "ridgeline-system"}


def test_defaults() -> None:
    s = from_env(BASE)
    assert s.node == "node-1"
    assert s.namespace == "ridgeline-system"
    assert s.root == Path("/var/lib/ridgeline/weights")
    assert (s.budget_bytes, s.grace_s, s.resync_s, s.metrics_port) == (0, 3600.0, 30.0, 9450)


def test_budget_takes_a_quantity() -> None:
    s = from_env({**BASE, "RIDGELINE_NODE_CACHE_BUDGET_BYTES": "2Gi"})
    assert s.budget_bytes == 2 * 2**30


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"RIDGELINE_NODE_CACHE_NAMESPACE": "x"}, "NODE_NAME"),
        ({**BASE, "RIDGELINE_NODE_CACHE_RESYNC_S": "soon"}, "RIDGELINE_NODE_CACHE_RESYNC_S"),
        ({**BASE, "RIDGELINE_NODE_CACHE_RESYNC_S": "0"}, "RIDGELINE_NODE_CACHE_RESYNC_S"),
        (
            {**BASE, "RIDGELINE_NODE_CACHE_BUDGET_BYTES": "lots"},
            "RIDGELINE_NODE_CACHE_BUDGET_BYTES",
        ),
    ],
)
def test_bad_values_are_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        from_env(env)
