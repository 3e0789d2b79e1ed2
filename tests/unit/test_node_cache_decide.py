"""The node cache agent's pure decisions: which checkpoints a node needs, what to evict under the
budget (least recently used, never a needed or held version), what the grace period frees."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ridgeline.storage.download import cache_key
from ridgeline_serving.node_cache.decide import (
    ModelRef,
    Version,
    evictable,
    expired,
    needed_checkpoints,
    plan_eviction,
)

GPU = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


def _model(
    name: str, uri: str, labels: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"model": {"uri": uri, **spec}},
        "status": {
            "weights": {
                "uri": uri,
                "directory": cache_key(uri),
                "bytes": 10,
                "nodeLabels": labels or {},
            }
        },
    }


def test_a_model_whose_labels_the_node_lacks_is_ignored() -> None:
    models = [_model("a", "s3://b/a", GPU), _model("b", "s3://b/b", {"pool": "other"})]
    needs = needed_checkpoints(models, {**GPU, "kubernetes.io/hostname": "n1"})
    assert [n.uri for n in needs.values()] == ["s3://b/a"]


def test_no_labels_means_every_node_and_no_weights_means_none() -> None:
    unplanned = {"metadata": {"name": "c", "namespace": "ns"}, "spec": {}, "status": {}}
    needs = needed_checkpoints([_model("a", "s3://b/a"), unplanned], {})
    assert list(needs) == [cache_key("s3://b/a")]


def test_models_with_one_uri_share_one_checkpoint() -> None:
    models = [
        _model("z", "s3://b/m", credentialsSecret="zs"),
        _model("a", "s3://b/m", sha256Manifest="SUMS"),
    ]
    (need,) = needed_checkpoints(models, {}).values()
    assert need.models == (
        ModelRef("ns", "a", None, "SUMS"),
        ModelRef("ns", "z", "zs", None),
    )


def test_a_directory_that_is_not_the_uris_cache_key_is_skipped() -> None:
    model = _model("a", "s3://b/m")
    model["status"]["weights"]["directory"] = "../../etc"
    assert needed_checkpoints([model], {}) == {}


def test_the_uri_is_the_specs_never_the_statuss() -> None:
    # Whoever may write the status subresource must not choose what the agent copies.
    model = _model("a", "s3://b/m")
    model["status"]["weights"]["uri"] = "file:///var/run/secrets/kubernetes.io/serviceaccount"
    (need,) = needed_checkpoints([model], {}).values()
    assert need.uri == "s3://b/m"


def test_only_object_store_schemes_are_filled() -> None:
    models = [_model(n, u) for n, u in [("s", "s3://b/m"), ("f", "file:///etc"), ("p", "/etc")]]
    models.append(_model("g", "gs://b/m"))
    models.append(_model("h", "hf://org/name"))
    uris = sorted(n.uri for n in needed_checkpoints(models, {}).values())
    assert uris == ["gs://b/m", "hf://org/name", "s3://b/m"]


def test_a_status_written_for_another_uri_waits_for_the_operator() -> None:
    model = _model("a", "s3://b/new")
    model["status"]["weights"]["directory"] = cache_key("s3://b/old")
    assert needed_checkpoints([model], {}) == {}
    del model["status"]["weights"]["directory"]
    assert needed_checkpoints([model], {}) == {}


def _v(d: str, used: float, size: int = 10, held: bool = False, digest: str = "0" * 16) -> Version:
    return Version(d, digest, size, used, held)


def test_eviction_takes_the_least_recently_used_unneeded_first() -> None:
    versions = [_v("old", 1), _v("older", 0), _v("needed", -5), _v("held", -9, held=True)]
    plan = plan_eviction(versions, {("needed", "0" * 16)}, needed=15, budget=40)
    assert [v.directory for v in plan.evict] == ["older", "old"]
    assert plan.enough


def test_eviction_waits_rather_than_evicting_too_little() -> None:
    versions = [_v("a", 0), _v("needed", 1, size=30)]
    plan = plan_eviction(versions, {("needed", "0" * 16)}, needed=50, budget=60)
    assert (plan.evict, plan.enough, plan.used, plan.needed) == ([], False, 40, 50)


def test_no_budget_evicts_nothing() -> None:
    assert plan_eviction([_v("a", 0, size=10**15)], set(), 10**15, 0).evict == []


def test_grace_frees_only_unneeded_unheld_versions_past_it() -> None:
    versions = [_v("gone", 0), _v("recent", 90), _v("held", 0, held=True), _v("kept", 0)]
    freed = expired(versions, {("kept", "0" * 16)}, now=100, grace_s=60)
    assert [v.directory for v in freed] == ["gone"]


_versions = st.lists(
    st.builds(
        Version,
        directory=st.sampled_from(["a", "b", "c", "d", "e"]),
        digest=st.sampled_from(["0" * 16, "1" * 16, "2" * 16]),
        bytes=st.integers(0, 1000),
        last_used=st.floats(0, 1000),
        in_use=st.booleans(),
    ),
    max_size=12,
    unique_by=lambda v: (v.directory, v.digest),
)


@given(
    versions=_versions,
    keep_dirs=st.sets(st.sampled_from(["a", "b", "c", "d", "e"])),
    needed=st.integers(0, 3000),
    budget=st.integers(1, 5000),
)
def test_eviction_property(
    versions: list[Version], keep_dirs: set[str], needed: int, budget: int
) -> None:
    keep = {(v.directory, v.digest) for v in versions if v.directory in keep_dirs}
    plan = plan_eviction(versions, keep, needed, budget)
    # Never a needed or held version, never one twice.
    assert all((v.directory, v.digest) not in keep and not v.in_use for v in plan.evict)
    assert len(set(plan.evict)) == len(plan.evict)
    used = sum(v.bytes for v in versions)
    freeable = sum(v.bytes for v in evictable(versions, keep))
    fits_now = used + needed <= budget
    possible = used - freeable + needed <= budget
    assert plan.enough == (fits_now or possible)
    if plan.enough:
        # Frees enough, and only the least recently used needed to.
        assert used - sum(v.bytes for v in plan.evict) + needed <= budget
        order = evictable(versions, keep)
        assert plan.evict == order[: len(plan.evict)]
        if plan.evict:
            assert used - sum(v.bytes for v in plan.evict[:-1]) + needed > budget
    else:
        assert plan.evict == []
