"""The sweep of node cache PersistentVolumes whose model went while the operator did not see it
(issue 24): which volumes are orphaned (Released; unbound for longer than the grace, counted on
the operator's own clock, with no claim), the sweep against a stand-in API (deletes guarded by
uid and resourceVersion, past a volume already gone, changed, refused or timing out), and the
sweep's own task: at start, then every minute, going on after a failure."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import ReadTimeoutError

from ridgeline.render import node_cache as render
from ridgeline_operator import node_cache_sweep
from ridgeline_operator.node_cache_sweep import UNBOUND_GRACE_S, SeenVolume, Sweeper, orphaned
from ridgeline_operator.reconcile import STATE
from tests.unit.test_node_cache_operator import _config

OLD = UNBOUND_GRACE_S + 1


def _never_asked(namespace: str, name: str) -> bool:
    raise AssertionError(f"claim {namespace}/{name} asked about")


def _names(volumes: list[SeenVolume]) -> list[str]:
    return [v.name for v in volumes]


def test_a_released_volume_is_orphaned_and_a_bound_one_is_not() -> None:
    volumes = [
        SeenVolume("released", "Released", ("ns", "a-weights-1"), 5.0),
        SeenVolume("bound", "Bound", ("ns", "b-weights-1"), OLD),
    ]
    assert _names(orphaned(volumes, _never_asked)) == ["released"]


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
    assert _names(orphaned(volumes, claim_exists)) == ["unclaimed", "no-ref"]
    assert asked == [("ns", "kept-claim"), ("ns", "gone-claim")]


# ---- the sweep against a stand-in CoreV1Api -----------------------------------------------------


def _pv(name: str, phase: str, claim: str = "c", deleting: bool = False) -> Any:
    return SimpleNamespace(
        metadata=SimpleNamespace(
            name=name,
            uid=f"uid-{name}",
            resource_version="7",
            deletion_timestamp="2026-12-06T08:00:00Z" if deleting else None,
        ),
        spec=SimpleNamespace(claim_ref=SimpleNamespace(namespace="ns", name=claim)),
        status=SimpleNamespace(phase=phase),
    )


class _Core:
    def __init__(self) -> None:
        self.pvs: list[Any] = []
        self.claims: set[tuple[str, str]] = set()
        self.selectors: list[str] = []
        self.deleted: list[tuple[str, Any]] = []
        self.delete_fails: dict[str, Exception] = {}

    def list_persistent_volume(self, **kw: Any) -> Any:
        self.selectors.append(kw["label_selector"])
        return SimpleNamespace(items=self.pvs)

    def read_namespaced_persistent_volume_claim(self, name: str, ns: str, **_: Any) -> Any:
        if name == "forbidden":
            raise ApiException(status=403, reason="Forbidden")
        if name == "slow":
            raise ReadTimeoutError(None, "/api", "Read timed out.")  # type: ignore[arg-type]
        if (ns, name) not in self.claims:
            raise ApiException(status=404, reason="NotFound")
        return SimpleNamespace()

    def delete_persistent_volume(self, name: str, body: Any = None, **_: Any) -> None:
        self.deleted.append((name, body))
        if name in self.delete_fails:
            raise self.delete_fails[name]


@pytest.fixture
def core(monkeypatch: pytest.MonkeyPatch) -> _Core:
    fake = _Core()
    monkeypatch.setattr(node_cache_sweep.client, "CoreV1Api", lambda _api: fake)
    return fake


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_sweep_deletes_orphans_only_among_the_node_cache_volumes(core: _Core) -> None:
    """Released ones at once; unbound ones once this process has seen them for longer than
    the grace and their claim is known gone (a 403 or a timeout reading it keeps the volume)."""
    core.pvs = [
        _pv("ridgeline-weights-released", "Released"),
        _pv("ridgeline-weights-bound", "Bound"),
        _pv("ridgeline-weights-unclaimed", "Available", claim="gone"),
        _pv("ridgeline-weights-claimed", "Available", claim="here"),
        _pv("ridgeline-weights-unreadable", "Available", claim="forbidden"),
        _pv("ridgeline-weights-timeout", "Available", claim="slow"),
        _pv("ridgeline-weights-going", "Released", deleting=True),
    ]
    core.claims = {("ns", "here")}
    clock = _Clock()
    sweeper = Sweeper(clock)
    assert sweeper.sweep(None) == ["ridgeline-weights-released"]
    core.pvs = core.pvs[1:]  # the released one is gone
    clock.now += UNBOUND_GRACE_S - 1
    assert sweeper.sweep(None) == []
    clock.now += 2
    assert sweeper.sweep(None) == ["ridgeline-weights-unclaimed"]
    assert set(core.selectors) == {render.VOLUMES_SELECTOR}
    assert "app.kubernetes.io/component=node-weights" in render.VOLUMES_SELECTOR


def test_a_volume_made_again_meanwhile_is_not_deleted(core: _Core) -> None:
    """Each delete names the uid and resourceVersion listed: the API server's 409 (a pass
    made the volume again under its name, or it changed) leaves it."""
    core.pvs = [_pv("remade", "Released"), _pv("other", "Released")]
    core.delete_fails = {"remade": ApiException(status=409, reason="Conflict")}
    assert Sweeper().sweep(None) == ["other"]
    name, body = core.deleted[0]
    assert name == "remade"
    assert (body.preconditions.uid, body.preconditions.resource_version) == ("uid-remade", "7")


def test_the_sweep_goes_past_a_volume_gone_refused_or_timing_out(
    core: _Core, caplog: pytest.LogCaptureFixture
) -> None:
    core.pvs = [_pv(n, "Released") for n in ("gone", "refused", "slow", "fourth")]
    core.delete_fails = {
        "gone": ApiException(status=404, reason="NotFound"),
        "refused": ApiException(status=403, reason="Forbidden"),
        "slow": ReadTimeoutError(None, "/api", "Read timed out."),  # type: ignore[arg-type]
    }
    with caplog.at_level(logging.WARNING):
        assert Sweeper().sweep(None) == ["fourth"]
    assert [name for name, _ in core.deleted] == ["gone", "refused", "slow", "fourth"]
    assert "refused: HTTP 403" in caplog.text
    assert "slow: " in caplog.text


# ---- the sweep's own task ---------------------------------------------------------------------


def test_the_sweep_task_sweeps_at_start_and_goes_on_after_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(STATE, "config", _config())
    monkeypatch.setattr(STATE, "api", object())
    monkeypatch.setattr(node_cache_sweep, "FIRST_SWEEP_S", 0.0)
    monkeypatch.setattr(node_cache_sweep, "SWEEP_EVERY_S", 0.0)
    sweeps: list[Any] = []

    class Failing:
        def sweep(self, api: Any) -> list[str]:
            sweeps.append(api)
            raise ApiException(status=500, reason="x")

    monkeypatch.setattr(node_cache_sweep, "SWEEPER", Failing())

    async def scenario() -> None:
        task = asyncio.create_task(node_cache_sweep.sweep_loop())
        try:
            async with asyncio.timeout(60):
                while len(sweeps) < 3:
                    await asyncio.sleep(0.001)
        finally:
            task.cancel()

    asyncio.run(scenario())
    assert sweeps[:3] == [STATE.api] * 3


def test_the_sweep_task_waits_while_the_node_cache_is_disabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(STATE, "config", _config(enabled=False))
    monkeypatch.setattr(STATE, "api", object())
    monkeypatch.setattr(node_cache_sweep, "FIRST_SWEEP_S", 0.0)
    called: list[Any] = []
    monkeypatch.setattr(node_cache_sweep, "SWEEPER", SimpleNamespace(sweep=called.append))

    async def scenario() -> None:
        task = asyncio.create_task(node_cache_sweep.sweep_loop())
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(scenario())
    assert called == []
