"""The typed view of a RayService that the reconcile reads: one walk over its service statuses
(active first, then pending), its hashes and its Ready condition; the RayCluster's own worker
counts win over the RayService's lagging copy once the RayCluster has reported any."""

from __future__ import annotations

from typing import Any

from ridgeline.controller import _ready
from ridgeline.rayservice_view import RayServiceView, ServiceCluster, WorkerCounts
from ridgeline.render.rayservice import CLUSTER_HASH, SPEC_HASH

RAYSERVICE: dict[str, Any] = {
    "metadata": {"annotations": {SPEC_HASH: "s1", CLUSTER_HASH: "c1", "other": "x"}},
    "spec": {"serveConfigV2": "..."},
    "status": {
        "pendingServiceStatus": {
            "rayClusterName": "m-new",
            "rayClusterStatus": {"desiredWorkerReplicas": 2},
        },
        "activeServiceStatus": {
            "rayClusterName": "m-old",
            "rayClusterStatus": {"desiredWorkerReplicas": 3, "readyWorkerReplicas": 1},
        },
        "conditions": [
            {"type": "UpgradeInProgress", "status": "True"},
            {"type": "Ready", "status": "False", "reason": "Deploying", "message": "2/3"},
        ],
    },
}


def test_the_view_reads_the_hashes_the_clusters_in_order_and_ready() -> None:
    view = RayServiceView.from_object(RAYSERVICE)
    assert (view.spec_hash, view.cluster_hash) == ("s1", "c1")
    assert view.clusters == (
        ServiceCluster("m-old", WorkerCounts(3, 1, reported=True)),
        ServiceCluster("m-new", WorkerCounts(2, 0, reported=True)),
    )
    assert view.cluster_names == ["m-old", "m-new"]
    assert view.ready is not None
    assert (view.ready.status, view.ready.reason, view.ready.message) == (
        "False",
        "Deploying",
        "2/3",
    )


def test_a_new_rayservice_has_no_clusters_and_no_ready() -> None:
    view = RayServiceView.from_object({"metadata": {}, "status": {"activeServiceStatus": {}}})
    assert view == RayServiceView()
    assert _ready(view, {})[1] == "RayServiceStarting"


def test_the_clusters_own_counts_win_once_it_reported() -> None:
    view = RayServiceView.from_object(RAYSERVICE)
    own = {
        "m-old": WorkerCounts.from_status({"desiredWorkerReplicas": 3, "readyWorkerReplicas": 3})
    }
    replicas = _ready(view, own)[3]
    assert replicas is not None
    assert (replicas.desired, replicas.ready) == (3, 3)
    # a RayCluster without a status yet: the RayService's copy stands
    replicas = _ready(view, {"m-old": WorkerCounts.from_status({})})[3]
    assert replicas is not None
    assert (replicas.desired, replicas.ready) == (3, 1)


def test_ready_condition_becomes_the_models() -> None:
    ready = {**RAYSERVICE["status"], "conditions": [{"type": "Ready", "status": "True"}]}
    status, reason, message, _ = _ready(
        RayServiceView.from_object({**RAYSERVICE, "status": ready}), {}
    )
    assert (status, reason, message) == ("True", "Ready", "")
