"""The operator's edge of the node cache (issue 24), against a stand-in API: which report changes
wake which models, the reports listed once before the first reconcile, the volume and claim
created if missing (a Released volume made again), an earlier URI's volumes pruned after an
apply, a deleted model's volumes deleted, and children's hooks around the RayService apply."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from types import SimpleNamespace
from typing import Any

import kopf
import pytest
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import ReadTimeoutError

from ridgeline.api import InferenceModel
from ridgeline.api.inference_model import InferenceModelStatus
from ridgeline.api.node_cache import CheckpointReport, NodeCacheReport
from ridgeline.controller import Decision, Result
from ridgeline.platform_config import NodeCacheConfig, default_config
from ridgeline.rayservice_view import RayServiceView
from ridgeline.render import node_cache as render
from ridgeline_operator import children, kube, node_cache
from ridgeline_operator.reconcile import STATE, reconcile
from ridgeline_operator.wakeups import Trigger, Wakeups
from tests.unit.test_handlers import fresh_state, model_raw

NS = "ridgeline-system"


def _report(node: str, state: str = "Filling", present: int = 0, **more: Any) -> NodeCacheReport:
    entry = CheckpointReport(
        uri="s3://models/a", digest="d", state=state, bytes=present, total_bytes=10, models=["ns/a"]
    )
    checkpoints = {"dir-a": entry, **more}
    return NodeCacheReport(
        node=node,
        updated="2026-12-06T08:00:00Z",
        budget_bytes=0,
        used_bytes=present,
        checkpoints=checkpoints,
    )


def _other(models: list[str]) -> CheckpointReport:
    return CheckpointReport(uri="s3://models/b", digest="e", state="Complete", models=models)


# ---- which models a report wakes -----------------------------------------------------------


def test_a_new_report_wakes_the_models_it_names() -> None:
    new = {"r1": _report("n1", b=_other(["ns/b", "team/c"]))}
    assert node_cache.changed_models({}, new) == {("ns", "a"), ("ns", "b"), ("team", "c")}


def test_only_changed_checkpoints_wake_their_models() -> None:
    old = {"r1": _report("n1", present=1, b=_other(["ns/b"]))}
    new = {"r1": _report("n1", present=5, b=_other(["ns/b"]))}
    assert node_cache.changed_models(old, new) == {("ns", "a")}
    # the report's own time and usage wake nobody
    later = {
        "r1": old["r1"].model_copy(update={"used_bytes": 99, "updated": "2026-12-07T00:00:00Z"})
    }
    assert node_cache.changed_models(old, later) == set()


def test_a_report_that_goes_wakes_its_models() -> None:
    assert node_cache.changed_models({"r1": _report("n1")}, {}) == {("ns", "a")}


def test_a_report_that_does_not_parse_is_left_out() -> None:
    good = _report("n1").model_dump_json(by_alias=True)
    parsed = node_cache.parse_reports(
        [("ok", {"report.json": good}), ("bad", {"report.json": "{"}), ("empty", {})]
    )
    assert list(parsed) == ["ok"]
    assert parsed["ok"].node == "n1"


# ---- a stand-in CoreV1Api ----------------------------------------------------------------------


def _obj(name: str, deleting: bool = False, **extra: Any) -> SimpleNamespace:
    stamp = "2026-12-06T08:00:00Z" if deleting else None
    return SimpleNamespace(metadata=SimpleNamespace(name=name, deletion_timestamp=stamp), **extra)


class _Core:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.pvs: dict[str, str] = {}  # name -> phase
        self.pvcs: list[str] = []
        self.deleting: set[str] = set()  # names with a deletionTimestamp
        self.delete_fails: dict[str, Exception] = {}
        self.configmaps: list[SimpleNamespace] = []
        self.fail: int | None = None

    def _record(self, call: str, arg: Any) -> None:
        self.calls.append((call, arg))
        if self.fail:
            raise ApiException(status=self.fail, reason="x")

    def list_namespaced_config_map(self, namespace: str, **kw: Any) -> Any:
        self._record("list_configmaps", (namespace, kw["label_selector"]))
        return SimpleNamespace(items=self.configmaps)

    def create_persistent_volume(self, body: Any, **_: Any) -> None:
        self._record("create_pv", body["metadata"]["name"])
        if body["metadata"]["name"] in self.pvs:
            raise ApiException(status=409, reason="AlreadyExists")

    def create_namespaced_persistent_volume_claim(self, ns: str, body: Any, **_: Any) -> None:
        self._record("create_pvc", (ns, body["metadata"]["name"]))
        if body["metadata"]["name"] in self.pvcs:
            raise ApiException(status=409, reason="AlreadyExists")

    def read_persistent_volume(self, name: str, **_: Any) -> Any:
        self._record("read_pv", name)
        if name not in self.pvs:
            raise ApiException(status=404, reason="NotFound")
        phase = SimpleNamespace(phase=self.pvs[name])
        return _obj(name, deleting=name in self.deleting, status=phase)

    def read_namespaced_persistent_volume_claim(self, name: str, ns: str, **_: Any) -> Any:
        self._record("read_pvc", (ns, name))
        if name not in self.pvcs:
            raise ApiException(status=404, reason="NotFound")
        return _obj(name, deleting=name in self.deleting)

    def delete_persistent_volume(self, name: str, **_: Any) -> None:
        self._record("delete_pv", name)
        if name in self.delete_fails:
            raise self.delete_fails[name]

    def delete_namespaced_persistent_volume_claim(self, name: str, ns: str, **_: Any) -> None:
        self._record("delete_pvc", (ns, name))

    def list_persistent_volume(self, **kw: Any) -> Any:
        self._record("list_pvs", kw["label_selector"])
        return SimpleNamespace(items=[_obj(n) for n in self.pvs])

    def list_namespaced_persistent_volume_claim(self, ns: str, **kw: Any) -> Any:
        self._record("list_pvcs", (ns, kw["label_selector"]))
        return SimpleNamespace(items=[_obj(n) for n in self.pvcs])


@pytest.fixture
def core(monkeypatch: pytest.MonkeyPatch) -> _Core:
    fake = _Core()
    monkeypatch.setattr(node_cache.client, "CoreV1Api", lambda _api: fake)
    return fake


def _config(enabled: bool = True) -> Any:
    if not enabled:
        return default_config()
    cache = NodeCacheConfig(enabled=True, namespace=NS)
    return default_config().model_copy(update={"node_cache": cache})


def test_reports_are_listed_before_the_first_reconcile_and_then_kept(core: _Core) -> None:
    report = _report("n1")
    core.configmaps = [
        SimpleNamespace(
            metadata=SimpleNamespace(name="ridgeline-node-cache-n1"),
            data={"report.json": report.model_dump_json(by_alias=True)},
        )
    ]
    reports = node_cache.Reports()
    assert reports.snapshot(None, _config(enabled=False)) == ()
    assert core.calls == []  # disabled: not a single call
    assert reports.snapshot(None, _config()) == (report,)
    selector = (
        "app.kubernetes.io/managed-by=ridgeline,app.kubernetes.io/component=node-cache-report"
    )
    assert core.calls == [("list_configmaps", (NS, selector))]
    reports.snapshot(None, _config())
    assert len(core.calls) == 1  # the poll keeps it fresh from now on
    assert reports.replace({}) == {("ns", "a")}
    assert reports.snapshot(None, _config()) == ()


def test_reports_that_cannot_be_listed_yet_are_none(core: _Core) -> None:
    core.fail = 403
    reports = node_cache.Reports()
    assert reports.snapshot(None, _config()) == ()
    assert reports.snapshot(None, _config()) == ()
    assert len(core.calls) == 1  # not a list per reconcile: the poll lists again


# ---- volumes -----------------------------------------------------------------------------------


def _model(uri: str = "s3://models/a") -> InferenceModel:
    return InferenceModel.model_validate(
        {"metadata": {"name": "a", "namespace": "ns"}, "spec": {"model": {"uri": uri}}}
    )


def _volumes(uri: str = "s3://models/a") -> list[dict[str, Any]]:
    return render.build_volumes(_model(uri), _config(), 10, "uid")


def test_volume_and_claim_are_created_if_missing(core: _Core) -> None:
    pv, pvc = _volumes()
    node_cache.create_volumes(None, [pv, pvc])
    assert core.calls == [
        ("read_pv", pv["metadata"]["name"]),
        ("create_pv", pv["metadata"]["name"]),
        ("read_pvc", ("ns", pvc["metadata"]["name"])),
        ("create_pvc", ("ns", pvc["metadata"]["name"])),
    ]
    core.calls.clear()
    core.pvs[pv["metadata"]["name"]] = "Bound"
    core.pvcs.append(pvc["metadata"]["name"])
    node_cache.create_volumes(None, [pv, pvc])  # both exist: left as they are
    assert [c for c, _ in core.calls] == ["read_pv", "read_pvc"]


@pytest.mark.parametrize("kind", ["PersistentVolume", "PersistentVolumeClaim"])
def test_a_volume_or_claim_being_deleted_is_made_again_once_gone(core: _Core, kind: str) -> None:
    """Not taken for the new one (it would vanish, and the pods stay Pending for good)."""
    pv, pvc = _volumes()
    core.pvs[pv["metadata"]["name"]] = "Bound"
    core.pvcs.append(pvc["metadata"]["name"])
    core.deleting.add((pv if kind == "PersistentVolume" else pvc)["metadata"]["name"])
    with pytest.raises(kopf.TemporaryError, match=f"{kind} .* is being deleted"):
        node_cache.create_volumes(None, [pv, pvc])
    assert not [c for c, _ in core.calls if c.startswith(("create", "delete"))]


def test_a_released_volume_is_deleted_and_made_again_on_the_retry(core: _Core) -> None:
    pv, pvc = _volumes()
    core.pvs[pv["metadata"]["name"]] = "Released"
    with pytest.raises(kopf.TemporaryError, match="released by an earlier claim"):
        node_cache.create_volumes(None, [pv, pvc])
    assert ("delete_pv", pv["metadata"]["name"]) in core.calls


def test_a_refused_create_is_a_kopf_error(core: _Core) -> None:
    core.fail = 403
    with pytest.raises(kopf.PermanentError, match="create PersistentVolume"):
        node_cache.create_volumes(None, _volumes())


def test_an_earlier_uris_volumes_go_after_the_apply(core: _Core) -> None:
    old_pv, old_pvc = _volumes("s3://models/old")
    pv, pvc = _volumes()
    core.pvs = {old_pv["metadata"]["name"]: "Bound", pv["metadata"]["name"]: "Bound"}
    core.pvcs = [old_pvc["metadata"]["name"], pvc["metadata"]["name"]]
    node_cache.prune_volumes(None, [pv, pvc])
    selector = "app.kubernetes.io/component=node-weights,ridgeline.dev/model-namespace=ns,ridgeline.dev/model=a"
    assert ("list_pvs", selector) in core.calls
    assert ("list_pvcs", ("ns", selector)) in core.calls
    deleted = [(c, a) for c, a in core.calls if c.startswith("delete")]
    assert deleted == [
        ("delete_pv", old_pv["metadata"]["name"]),
        ("delete_pvc", ("ns", old_pvc["metadata"]["name"])),
    ]


def test_nothing_is_called_with_the_node_cache_disabled(core: _Core) -> None:
    node_cache.create_volumes(None, [])
    node_cache.prune_volumes(None, [])
    assert core.calls == []


def test_a_deleted_models_volumes_are_deleted(core: _Core) -> None:
    core.pvs = {"ridgeline-weights-1": "Bound", "ridgeline-weights-2": "Released"}
    assert node_cache.delete_model_volumes(None, "ns", "a") == 2
    assert [a for c, a in core.calls if c == "delete_pv"] == list(core.pvs)


def test_a_deleted_models_volumes_go_past_one_already_gone_or_failing(core: _Core) -> None:
    core.pvs = {"ridgeline-weights-1": "Bound", "ridgeline-weights-2": "Bound", "w-3": "Bound"}
    core.delete_fails = {
        "ridgeline-weights-1": ApiException(status=404, reason="NotFound"),
        "ridgeline-weights-2": ReadTimeoutError(None, "/api", "Read timed out."),  # type: ignore[arg-type]
    }
    assert node_cache.delete_model_volumes(None, "ns", "a") == 1
    assert [a for c, a in core.calls if c == "delete_pv"] == list(core.pvs)


def test_the_delete_handler_never_holds_the_models_deletion(
    core: _Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(STATE, "config", _config())

    def timed_out(**_: Any) -> Any:
        raise ReadTimeoutError(None, "/api", "Read timed out.")  # type: ignore[arg-type]

    core.list_persistent_volume = timed_out  # type: ignore[method-assign]
    node_cache.delete_volumes(namespace="ns", name="a", logger=logging.getLogger(__name__))


def test_children_prune_an_earlier_uris_volumes_after_the_apply(
    core: _Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    decision = Decision(
        status=InferenceModelStatus(), result=Result.APPLIED, apply={}, node_volumes=_volumes()
    )
    children.before_apply(None, decision)  # type: ignore[arg-type]
    assert core.calls == []  # the volumes are the reconcile's, on every pass
    monkeypatch.setattr(children.client, "CustomObjectsApi", lambda _api: None)
    children.after_apply(None, decision, "ns")  # type: ignore[arg-type]
    assert [c for c, _ in core.calls] == ["list_pvs", "list_pvcs"]


def test_every_pass_makes_a_missing_claim_again_not_only_an_apply(
    core: _Core, monkeypatch: pytest.MonkeyPatch, shape_of: Any
) -> None:
    """The first pass applies; the next finds the RayService as applied (nothing to apply)
    while the claim was deleted meanwhile (an admin): it is made again, or the pods would stay
    Pending for good."""
    fresh_state(monkeypatch)
    monkeypatch.setattr(STATE, "config", _config())
    monkeypatch.setattr(STATE.shapes, "get", lambda uri, ns, secret: (shape_of("tiny-llama"), None))
    monkeypatch.setattr(node_cache, "REPORTS", node_cache.Reports())
    applied: list[dict[str, Any]] = []
    monkeypatch.setattr(kube, "apply_rayservice", lambda api, manifest: applied.append(manifest))
    raw = model_raw("s3://models/a")
    first = reconcile(kopf.Body(raw), {"rayservice_index": {}, "raycluster_index": {}}, [])
    assert first.result == "applied"
    pv, pvc = (v["metadata"]["name"] for v in first.node_volumes)
    assert [a for c, a in core.calls if c.startswith("create")] == [pv, ("ns", pvc)]

    core.calls.clear()
    core.pvs[pv] = "Bound"  # the claim is gone
    running = {**applied[0], "status": {}}
    indexes = {"rayservice_index": {("ns", "m"): [RayServiceView.from_object(running)]}}
    raw["status"] = first.status.to_api()
    second = reconcile(kopf.Body(raw), {**indexes, "raycluster_index": {}}, [])
    assert second.result == "unchanged"
    assert len(applied) == 1
    assert [a for c, a in core.calls if c.startswith("create")] == [("ns", pvc)]


def test_a_model_made_again_under_its_name_and_uri_gets_new_volume_names() -> None:
    def named(uid: str) -> list[str]:
        model = InferenceModel.model_validate(
            {
                "metadata": {"name": "a", "namespace": "ns", "uid": uid},
                "spec": {"model": {"uri": "s3://models/a"}},
            }
        )
        return [render.volume_name(model), render.claim_name(model)]

    assert set(named("u1")).isdisjoint(named("u2"))


def test_the_reports_round_trip_as_the_agent_writes_them() -> None:
    """The agent writes report.json with camelCase keys (ApiModel)."""
    text = _report("n1").model_dump_json(by_alias=True)
    assert "totalBytes" in json.loads(text)["checkpoints"]["dir-a"]
    assert node_cache.parse_reports([("x", {"report.json": text})])["x"] == _report("n1")


def test_the_report_poll_goes_on_after_a_failure_that_is_not_an_api_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read timeout (urllib3's, not an ApiException) once: the next list still lands and
    wakes the models its reports name."""
    monkeypatch.setattr(STATE, "config", _config())
    monkeypatch.setattr(STATE, "api", object())
    monkeypatch.setattr(STATE, "wakeups", Wakeups())
    monkeypatch.setattr(node_cache, "REPORTS", node_cache.Reports())
    monkeypatch.setattr(node_cache, "POLL_S", 0.0)
    answers: list[Any] = [
        ReadTimeoutError(None, "/api/v1/configmaps", "Read timed out."),  # type: ignore[arg-type]
        {"r1": _report("n1")},
    ]

    def listed(api: Any, namespace: str) -> Any:
        answer = answers.pop(0) if answers else {"r1": _report("n1")}
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(node_cache, "list_reports", listed)

    async def scenario() -> frozenset[Trigger]:
        waker = STATE.wakeups.register(("ns", "a"))
        poll = asyncio.create_task(node_cache._poll())
        try:
            async with asyncio.timeout(60):  # only so that a broken poll fails, not hangs
                return await waker.wait(60)
        finally:
            poll.cancel()

    assert asyncio.run(scenario()) == frozenset({Trigger.NODE_CACHE})
    assert not answers


def test_other_threads_first_passes_wait_for_the_first_list(core: _Core) -> None:
    """They would otherwise see no reports (NoAgent, a Warning Event), and the poll, finding
    nothing changed since, would wake no one until the resync."""
    report = _report("n1")
    core.configmaps = [
        SimpleNamespace(
            metadata=SimpleNamespace(name="ridgeline-node-cache-n1"),
            data={"report.json": report.model_dump_json(by_alias=True)},
        )
    ]
    listing, release = threading.Event(), threading.Event()
    listed = core.list_namespaced_config_map

    def slow(namespace: str, **kw: Any) -> Any:
        listing.set()
        assert release.wait(60)
        return listed(namespace, **kw)

    core.list_namespaced_config_map = slow  # type: ignore[method-assign]
    reports = node_cache.Reports()
    got: dict[str, tuple[NodeCacheReport, ...]] = {}
    first = threading.Thread(target=lambda: got.update(a=reports.snapshot(None, _config())))
    first.start()
    assert listing.wait(60)
    second = threading.Thread(target=lambda: got.update(b=reports.snapshot(None, _config())))
    second.start()
    second.join(1.0)  # returns at once when it does not wait (the defect)
    release.set()
    first.join(60)
    second.join(60)
    assert got == {"a": (report,), "b": (report,)}
    assert len(core.calls) == 1  # one list, not one per thread
