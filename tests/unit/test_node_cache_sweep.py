"""The sweep of node cache PersistentVolumes whose model went while the operator did not see it
(issue 24): which volumes are orphaned (Released; unbound past the grace with no claim), the
sweep against a stand-in API (past a volume already gone or failing), and the report poll
sweeping at its start, then once a minute, going on when a sweep fails."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from ridgeline.render import node_cache as render
from ridgeline_operator import node_cache, node_cache_sweep
from ridgeline_operator.node_cache_sweep import UNBOUND_GRACE_S, SeenVolume, orphaned
from ridgeline_operator.reconcile import STATE
from ridgeline_operator.wakeups import Wakeups
from tests.unit.test_node_cache_operator import _config

OLD = UNBOUND_GRACE_S + 1
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _never_asked(namespace: str, name: str) -> bool:
    raise AssertionError(f"claim {namespace}/{name} asked about")


def test_a_released_volume_is_orphaned_and_a_bound_one_is_not() -> None:
    volumes = [
        SeenVolume("released", "Released", ("ns", "a-weights-1"), 5.0),
        SeenVolume("bound", "Bound", ("ns", "b-weights-1"), OLD),
    ]
    assert orphaned(volumes, _never_asked) == ["released"]


def test_an_unbound_volume_goes_only_past_the_grace_and_without_its_claim() -> None:
    asked: list[tuple[str, str]] = []

    def claim_exists(namespace: str, name: str) -> bool:
        asked.append((namespace, name))
        return name == "kept-claim"

    volumes = [
        SeenVolume("young", "Available", ("ns", "gone-claim"), UNBOUND_GRACE_S - 1),
        SeenVolume("claimed", "Available", ("ns", "kept-claim"), OLD),
        SeenVolume("unclaimed", "Available", ("ns", "gone-claim"), OLD),
        SeenVolume("no-ref", "Pending", None, OLD),
    ]
    assert orphaned(volumes, claim_exists) == ["unclaimed", "no-ref"]
    assert asked == [("ns", "kept-claim"), ("ns", "gone-claim")]


# ---- the sweep against a stand-in CoreV1Api -----------------------------------------------------


def _pv(name: str, phase: str, age_s: float = 5.0, claim: str = "c", deleting: bool = False) -> Any:
    return SimpleNamespace(
        metadata=SimpleNamespace(
            name=name,
            creation_timestamp=datetime.now(UTC) - timedelta(seconds=age_s),
            deletion_timestamp="2026-12-06T08:00:00Z" if deleting else None,
        ),
        spec=SimpleNamespace(claim_ref=SimpleNamespace(namespace="ns", name=claim)),
        status=SimpleNamespace(phase=phase),
    )


class _Core:
    def __init__(self, pvs: list[Any]) -> None:
        self.pvs = pvs
        self.claims: set[tuple[str, str]] = set()
        self.selectors: list[str] = []
        self.deleted: list[str] = []
        self.delete_fails: dict[str, int] = {}

    def list_persistent_volume(self, **kw: Any) -> Any:
        self.selectors.append(kw["label_selector"])
        return SimpleNamespace(items=self.pvs)

    def read_namespaced_persistent_volume_claim(self, name: str, ns: str, **_: Any) -> Any:
        if name == "forbidden":
            raise ApiException(status=403, reason="Forbidden")
        if (ns, name) not in self.claims:
            raise ApiException(status=404, reason="NotFound")
        return SimpleNamespace()

    def delete_persistent_volume(self, name: str, **_: Any) -> None:
        self.deleted.append(name)
        if name in self.delete_fails:
            raise ApiException(status=self.delete_fails[name], reason="x")


@pytest.fixture
def core(monkeypatch: pytest.MonkeyPatch) -> _Core:
    fake = _Core([])
    monkeypatch.setattr(node_cache_sweep.client, "CoreV1Api", lambda _api: fake)
    return fake


def test_the_sweep_deletes_orphans_only_among_the_node_cache_volumes(core: _Core) -> None:
    """A claim the operator may not read (403) keeps its volume: only one known gone frees it."""
    core.pvs = [
        _pv("ridgeline-weights-released", "Released"),
        _pv("ridgeline-weights-bound", "Bound", OLD),
        _pv("ridgeline-weights-unclaimed", "Available", OLD, claim="gone"),
        _pv("ridgeline-weights-claimed", "Available", OLD, claim="here"),
        _pv("ridgeline-weights-unreadable", "Available", OLD, claim="forbidden"),
        _pv("ridgeline-weights-going", "Released", deleting=True),
    ]
    core.claims = {("ns", "here")}
    assert node_cache_sweep.sweep(None) == [
        "ridgeline-weights-released",
        "ridgeline-weights-unclaimed",
    ]
    assert core.selectors == [render.VOLUMES_SELECTOR]
    assert "app.kubernetes.io/component=node-weights" in render.VOLUMES_SELECTOR


def test_the_sweep_goes_past_a_volume_already_gone_or_refused(
    core: _Core, caplog: pytest.LogCaptureFixture
) -> None:
    core.pvs = [_pv("gone", "Released"), _pv("refused", "Released"), _pv("third", "Released")]
    core.delete_fails = {"gone": 404, "refused": 403}
    with caplog.at_level(logging.WARNING):
        assert node_cache_sweep.sweep(None) == ["third"]
    assert core.deleted == ["gone", "refused", "third"]
    assert "refused: HTTP 403" in caplog.text


# ---- the poll sweeps at start, then once a minute ---------------------------------------------


def test_the_poll_sweeps_at_start_and_lists_reports_past_a_failed_sweep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(STATE, "config", _config())
    monkeypatch.setattr(STATE, "api", object())
    monkeypatch.setattr(STATE, "wakeups", Wakeups())
    monkeypatch.setattr(node_cache, "REPORTS", node_cache.Reports())
    monkeypatch.setattr(node_cache, "POLL_S", 0.0)
    sweeps: list[Any] = []
    lists: list[str] = []

    def failing_sweep(api: Any) -> list[str]:
        sweeps.append(api)
        raise ApiException(status=500, reason="x")

    def listed(api: Any, namespace: str) -> dict[str, Any]:
        lists.append(namespace)
        return {}

    monkeypatch.setattr(node_cache_sweep, "sweep", failing_sweep)
    monkeypatch.setattr(node_cache, "list_reports", listed)

    async def scenario() -> None:
        poll = asyncio.create_task(node_cache._poll())
        try:
            async with asyncio.timeout(60):
                while len(lists) < 20:
                    await asyncio.sleep(0.001)
        finally:
            poll.cancel()

    asyncio.run(scenario())
    assert len(sweeps) == 1  # at the start; the next one a minute later
    assert len(lists) >= 20
