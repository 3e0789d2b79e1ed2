"""The operator's reconcile pass around the pure decision, and what wakes it: status patched
only on change, a refused apply is the decision's own outcome, pools derived once per change of
the node set, and a pool change wakes only the models planned on that pool. The daemon that runs
the passes and writes the status: test_status_writer.py."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

import kopf
import pytest

from ridgeline.planner import NodePool
from ridgeline_dev.fleet import node_manifests
from ridgeline_operator import children, handlers, kube
from ridgeline_operator.node_pools import PoolCache, node_facts
from ridgeline_operator.reconcile import STATE, Written, reconcile, status_change, write_status
from ridgeline_operator.wakeups import Trigger, Wakeups, first_resync_s, next_resync_s

H100 = NodePool(
    name="h100", gpu_product="NVIDIA-H100-80GB-HBM3", gpus_per_node=8, driver_version="550.54.15"
)
L4 = NodePool(name="l4", gpu_product="NVIDIA-L4", gpus_per_node=1, driver_version="570.124.06")


def _node_objects(*pools: NodePool) -> list[dict[str, Any]]:
    nodes = node_manifests(list(pools))
    for n in nodes:
        n.setdefault("status", {})["conditions"] = [{"type": "Ready", "status": "True"}]
    return nodes


def _cache(*pools: NodePool) -> PoolCache:
    cache = PoolCache()
    for n in _node_objects(*pools):
        cache.node(n["metadata"]["name"], node_facts(n["metadata"]["labels"], {}, n["status"]))
    cache.derive()
    return cache


def fresh_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's state for one test (test_status_writer.py's too): one H100 pool's ready
    nodes, no wake-ups, and nothing applied beside the RayService."""
    monkeypatch.setattr(STATE, "pools", _cache(H100))
    monkeypatch.setattr(STATE, "wakeups", Wakeups())
    # The owned objects beside the RayService (token Secret, NetworkPolicy) need an API server.
    monkeypatch.setattr(children, "before_apply", lambda api, decision: None)
    monkeypatch.setattr(children, "after_apply", lambda api, decision, ns: None)


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh_state(monkeypatch)
    monkeypatch.setattr(kopf, "event", lambda *a, **k: None)


def _indexes() -> dict[str, Any]:
    return {"rayservice_index": {}, "raycluster_index": {}}


def model_raw(
    uri: str, generation: int = 1, resource_version: str = "7", **spec: Any
) -> dict[str, Any]:
    """An InferenceModel ns/m as the API server returns it (test_status_writer.py's too)."""
    return {
        "apiVersion": "ridgeline.dev/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {
            "name": "m",
            "namespace": "ns",
            "uid": "u1",
            "generation": generation,
            "resourceVersion": resource_version,
        },
        "spec": {"model": {"uri": uri}, "workload": {"maxContextTokens": 512}, **spec},
    }


def _body(
    uri: str,
    status: dict[str, Any] | None = None,
    generation: int = 1,
    resource_version: str = "7",
    **spec: Any,
) -> kopf.Body:
    raw = model_raw(uri, generation, resource_version, **spec)
    if status is not None:
        raw["status"] = status
    return kopf.Body(raw)


def test_refused_apply_is_the_decisions_own_outcome(
    skeleton_dir: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(api: Any, manifest: dict[str, Any]) -> None:
        raise kopf.PermanentError("apply RayService ns/m: HTTP 403 Forbidden: nope")

    monkeypatch.setattr(kube, "apply_rayservice", refuse)
    body = _body(skeleton_dir("tiny-llama").as_uri())
    decision = reconcile(body, _indexes(), [Trigger.SPEC])
    assert decision.result == "refused"
    assert decision.apply is None
    conds = {c.type: c for c in decision.status.conditions}
    assert (conds["Applied"].status, conds["Applied"].reason) == ("False", "ApplyRefused")
    assert "403 Forbidden" in conds["Applied"].message
    assert ("Applied", "ApplyRefused") in [(e.type, e.new.reason) for e in decision.events]
    status = status_change(body, decision)
    assert status is not None
    assert status["observedGeneration"] == 1  # so the resync retries it
    assert "endpoint" not in status  # nothing serves there


def test_owned_objects_go_around_the_rayservice_apply(
    skeleton_dir: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def before(api: Any, decision: Any) -> None:
        calls.append("before")
        assert [o["kind"] for o in decision.owned] == ["NetworkPolicy"]

    monkeypatch.setattr(children, "before_apply", before)
    monkeypatch.setattr(kube, "apply_rayservice", lambda api, manifest: calls.append("apply"))
    monkeypatch.setattr(children, "after_apply", lambda api, d, ns: calls.append(f"after {ns}"))
    decision = reconcile(_body(skeleton_dir("tiny-llama").as_uri()), _indexes(), [Trigger.SPEC])
    assert decision.result == "applied"
    assert calls == ["before", "apply", "after ns"]


def test_a_serve_only_change_keeps_the_running_cluster_under_recreate(
    skeleton_dir: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The RayService view keeps the cluster hash: without it every re-apply would look like
    new pods and delete the running RayClusters."""
    applied: list[dict[str, Any]] = []
    monkeypatch.setattr(kube, "apply_rayservice", lambda api, manifest: applied.append(manifest))
    uri = skeleton_dir("tiny-llama").as_uri()
    first = reconcile(_body(uri), _indexes(), [Trigger.SPEC])
    assert STATE.config.upgrade_strategy == "Recreate"
    running = {"activeServiceStatus": {"rayClusterName": "m-abcde"}}
    rs = handlers._rayservice_view(
        kopf.Meta(kopf.Body(applied[0])), kopf.Status(kopf.Body({"status": running}))
    )
    indexes = _indexes()
    indexes["rayservice_index"] = {("ns", "m"): [rs]}
    scaled = _body(uri, first.status.to_api(), 2, replicas={"min": 0, "max": 4})
    again = reconcile(scaled, indexes, [Trigger.SPEC])
    assert again.result == "applied"  # the Serve config changed...
    assert again.replace_clusters == []  # ...and the cluster stays


def test_status_is_patched_only_when_it_changes(
    skeleton_dir: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    applied: list[dict[str, Any]] = []
    writes: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(kube, "apply_rayservice", lambda api, manifest: applied.append(manifest))
    monkeypatch.setattr(
        kube, "patch_status", lambda api, g, v, p, ns, n, rv, status: writes.append((rv, status))
    )
    uri = skeleton_dir("tiny-llama").as_uri()
    first = _body(uri)
    assert write_status(first, reconcile(first, _indexes(), [Trigger.SPEC])) is Written.LANDED
    [(rv, status)] = writes
    assert (rv, status["conditions"][2]["reason"]) == ("7", "Applied")  # onto what it read
    indexes = _indexes()
    rs = handlers._rayservice_view(kopf.Meta(kopf.Body(applied[0])), kopf.Status(kopf.Body({})))
    indexes["rayservice_index"] = {("ns", "m"): [rs]}
    second = _body(uri, status, resource_version="8")
    assert write_status(second, reconcile(second, indexes, [Trigger.RAYSERVICE])) is Written.LANDED
    # the RayService now exists: only Ready's reason moves
    assert [c["reason"] for c in writes[1][1]["conditions"]][3] == "RayServiceStarting"
    third = _body(uri, writes[1][1], resource_version="9")
    assert write_status(third, reconcile(third, indexes, [Trigger.RESYNC])) is Written.NOTHING
    assert len(writes) == 2
    assert len(applied) == 1


def test_pools_are_derived_once_per_change_of_the_node_set() -> None:
    cache = PoolCache()
    nodes = _node_objects(H100.model_copy(update={"nodes": 3}), L4)
    for n in nodes:
        cache.node(n["metadata"]["name"], node_facts(n["metadata"]["labels"], {}, n["status"]))
    assert {p.gpu_product for p in cache.pools} == set()  # not derived per node event
    added = cache.derive()
    assert cache.derivations == 1
    assert {p.gpu_product: p.nodes for p in cache.pools} == {
        "NVIDIA-H100-80GB-HBM3": 3,
        "NVIDIA-L4": 1,
    }
    assert len(added) == 2
    # a heartbeat (same labels, allocatable, readiness) changes nothing and derives nothing
    first = nodes[0]
    same = node_facts(first["metadata"]["labels"], {}, first["status"])
    assert not cache.node(first["metadata"]["name"], same)
    assert cache.derive() == set()
    assert cache.derivations == 1
    # one H100 node upgrades its driver: a pool of its own appears; the H100 pool only shrinks,
    # which changes no decision (its models keep their plans), so it is not a change
    h100 = next(p.name for p in cache.pools if p.gpu_product == "NVIDIA-H100-80GB-HBM3")
    labels = {**first["metadata"]["labels"], "nvidia.com/cuda.driver-version.full": "570.124.06"}
    assert cache.node(first["metadata"]["name"], node_facts(labels, {}, first["status"]))
    changed = cache.derive()
    assert [(p.name, p.nodes) for p in cache.pools if p.name == h100] == [(h100, 2)]
    assert len(changed) == 1
    assert h100 not in changed
    assert next(p for p in cache.pools if p.name in changed).driver_version == "570.124.06"
    # a cordoned node leaves its pool: smaller, not changed; the last one takes the pool away
    for n in nodes[1:3]:
        assert cache.node(
            n["metadata"]["name"],
            node_facts(n["metadata"]["labels"], {"unschedulable": True}, n["status"]),
        )
        assert cache.derive() == (set() if n is nodes[1] else {h100})
    assert h100 not in {p.name for p in cache.pools}


def test_declared_pools_stand_in_until_nodes_appear() -> None:
    declared = H100.model_copy(update={"name": "declared-h100"})
    cache = PoolCache([declared])
    assert [p.name for p in cache.pools] == ["declared-h100"]
    n = _node_objects(H100)[0]
    cache.node(n["metadata"]["name"], node_facts(n["metadata"]["labels"], {}, n["status"]))
    assert cache.derive() == {"declared-h100", next(iter(p.name for p in cache.pools))}
    assert [p.name for p in cache.pools] != ["declared-h100"]


def test_a_pool_change_wakes_only_the_models_on_that_pool() -> None:
    async def scenario() -> tuple[int, list[frozenset[Trigger]]]:
        wakeups = Wakeups()
        wakers = {f"m{i}": wakeups.register(("ns", f"m{i}")) for i in range(4)}
        wakeups.planned_on(("ns", "m0"), "h100")
        wakeups.planned_on(("ns", "m1"), "h100")
        wakeups.planned_on(("ns", "m2"), "l4")
        wakeups.planned_on(("ns", "m3"), None)  # no plan yet: a new pool may make it feasible
        wakeups.wake(("ns", "m1"), Trigger.RAYSERVICE)
        woken = wakeups.wake_pools({"h100", "h100-new-driver"})
        got = [await w.wait(0.01) for w in wakers.values()]
        return woken, got

    woken, got = asyncio.run(scenario())
    assert woken == 3
    pools, resync = frozenset({Trigger.POOLS}), frozenset({Trigger.RESYNC})
    # two wakes before m1 ran make one pass that counts both
    assert got == [pools, pools | {Trigger.RAYSERVICE}, resync, pools]


def test_owner_is_woken_when_what_it_reads_changes_not_on_every_event() -> None:
    async def scenario() -> list[frozenset[Trigger]]:
        wakeups = Wakeups()
        STATE.wakeups = wakeups
        waker = wakeups.register(("ns", "m"))
        labels = {"ridgeline.dev/model": "m", "app.kubernetes.io/managed-by": "ridgeline"}
        got = []
        for type_, ready in ((None, 0), ("MODIFIED", 0), ("MODIFIED", 1), ("MODIFIED", 1)):
            await handlers.raycluster_changed(
                type=type_,  # type: ignore[arg-type]
                namespace="ns",
                name="m-raycluster-x",
                labels=labels,
                status=kopf.Status(kopf.Body({"status": {"readyWorkerReplicas": ready}})),
            )
            got.append(await waker.wait(0.01))
        return got

    # the initial listing wakes nobody (resume handles it); an unchanged heartbeat neither
    resync, raycluster = frozenset({Trigger.RESYNC}), frozenset({Trigger.RAYCLUSTER})
    assert asyncio.run(scenario()) == [resync, resync, raycluster, resync]


def test_a_waiting_daemon_exits_when_asked_and_resyncs_when_nothing_woke_it() -> None:
    async def scenario() -> list[frozenset[Trigger]]:
        waker = Wakeups().register(("ns", "m"))
        stopping: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        got = [await waker.wait(0.01, stopping)]
        waker.wake(Trigger.RAYCLUSTER)
        got.append(await waker.wait(5, stopping))
        stopping.set_result(None)
        got.append(await waker.wait(5, stopping))  # returns at once, not after 5 s
        return got

    started = time.monotonic()
    got = asyncio.run(scenario())
    assert got == [frozenset({Trigger.RESYNC}), frozenset({Trigger.RAYCLUSTER}), frozenset()]
    assert time.monotonic() - started < 2


def test_the_first_resync_waits_a_period_then_spreads_over_the_next() -> None:
    """Every model was just reconciled when its daemon started: no resync in the first period
    (it would only add passes while a thousand models converge), then evenly spread."""
    rng_state = random.getstate()
    random.seed(13)
    try:
        firsts = [first_resync_s(300.0) for _ in range(1000)]
        nexts = [next_resync_s(300.0) for _ in range(1000)]
    finally:
        random.setstate(rng_state)
    assert min(firsts) >= 300.0
    assert max(firsts) < 600.0
    per_slot = Counter(int((f - 300.0) // 30.0) for f in firsts)  # ten 30 s slots
    assert len(per_slot) == 10
    assert max(per_slot.values()) < 150  # 100 each on average
    assert min(nexts) >= 270.0
    assert max(nexts) <= 330.0
