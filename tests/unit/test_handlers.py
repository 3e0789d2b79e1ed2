"""The operator's reconcile pass around the pure decision: status patched only on change, and
an apply the API server refuses recorded as Applied=False instead of crashing the handler."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from ridgeline.planner import NodePool
from ridgeline_dev.fleet import node_manifests
from ridgeline_operator import children, handlers, kube

H100 = NodePool(
    name="h100", gpu_product="NVIDIA-H100-80GB-HBM3", gpus_per_node=8, driver_version="550.54.15"
)


def _indexes() -> dict[str, Any]:
    nodes = [
        (n["metadata"]["labels"], n["status"]["allocatable"], True) for n in node_manifests([H100])
    ]
    return {"node_index": {None: nodes}, "rayservice_index": {}, "raycluster_index": {}}


def _body(uri: str, status: dict[str, Any] | None = None) -> kopf.Body:
    raw = {
        "apiVersion": "ridgeline.dev/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": "m", "namespace": "ns", "uid": "u1", "generation": 1},
        "spec": {"model": {"uri": uri}, "workload": {"maxContextTokens": 512}},
    }
    if status is not None:
        raw["status"] = status
    return kopf.Body(raw)


def _no_children(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(children, "before_apply", lambda api, decision: None)
    monkeypatch.setattr(children, "after_apply", lambda api, decision, ns: None)


def test_refused_apply_is_a_false_condition_not_a_crash(
    skeleton_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(api: Any, manifest: dict[str, Any]) -> None:
        raise kopf.PermanentError("apply RayService ns/m: HTTP 403 Forbidden: nope")

    monkeypatch.setattr(kube, "apply_rayservice", refuse)
    _no_children(monkeypatch)
    monkeypatch.setattr(kopf, "event", lambda *a, **k: None)
    patch = kopf.Patch()
    assert (
        handlers.reconcile(_body(skeleton_dir("tiny-llama").as_uri()), patch, _indexes())
        == "refused"
    )
    conds = {c["type"]: c for c in patch["status"]["conditions"]}
    assert (conds["Applied"]["status"], conds["Applied"]["reason"]) == ("False", "ApplyRefused")
    assert "403 Forbidden" in conds["Applied"]["message"]
    assert patch["status"]["observedGeneration"] == 1  # so the resync timer retries it


def test_status_is_patched_only_when_it_changes(
    skeleton_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    applied: list[dict[str, Any]] = []
    monkeypatch.setattr(kube, "apply_rayservice", lambda api, manifest: applied.append(manifest))
    _no_children(monkeypatch)
    monkeypatch.setattr(kopf, "event", lambda *a, **k: None)
    uri = skeleton_dir("tiny-llama").as_uri()
    first = kopf.Patch()
    assert handlers.reconcile(_body(uri), first, _indexes()) == "applied"
    indexes = _indexes()
    indexes["rayservice_index"] = {("ns", "m"): [applied[0]]}
    second = kopf.Patch()
    assert handlers.reconcile(_body(uri, dict(first["status"])), second, indexes) == "unchanged"
    # the RayService now exists: only Ready's reason moves
    third = kopf.Patch()
    handlers.reconcile(_body(uri, dict(second["status"])), third, indexes)
    assert "status" not in third
    assert len(applied) == 1
