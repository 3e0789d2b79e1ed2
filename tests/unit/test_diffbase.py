"""The operator's diff base: kopf's own for InferenceModels, nothing copied for other kinds."""

from __future__ import annotations

import kopf

from ridgeline_operator.diffbase import ModelsOnlyDiffBase

STORE = ModelsOnlyDiffBase(prefix="ridgeline.dev", key="last-handled-configuration")
KOPF = kopf.AnnotationsDiffBaseStorage(prefix="ridgeline.dev", key="last-handled-configuration")


def model() -> kopf.Body:
    return kopf.Body(
        {
            "apiVersion": "ridgeline.dev/v1alpha1",
            "kind": "InferenceModel",
            "metadata": {
                "name": "m",
                "namespace": "ns",
                "labels": {"team": "a"},
                "annotations": {
                    "ridgeline.dev/last-handled-configuration": '{"spec":{"a":1}}\n',
                    "note": "kept",
                },
            },
            "spec": {"model": {"uri": "s3://bucket/m"}, "replicas": {"max": 2}},
            "status": {"plan": {"options": [{"pool": "h100"}] * 50}},
        }
    )


def test_a_model_gets_kopfs_own_diff_base_without_copying_its_status() -> None:
    body = model()
    assert STORE.build(body=body) == KOPF.build(body=body)
    assert "status" not in STORE.build(body=body)
    assert STORE.build(body=body)["spec"] == body["spec"]
    assert STORE.fetch(body=body) == {"spec": {"a": 1}}
    # a change of spec is a change; a change of status is not
    changed = kopf.Body({**body, "spec": {**body["spec"], "replicas": {"max": 3}}})
    assert STORE.build(body=changed) != STORE.build(body=body)
    restatused = kopf.Body({**body, "status": {}})
    assert STORE.build(body=restatused) == STORE.build(body=body)


def test_other_kinds_get_an_empty_diff_base() -> None:
    node = kopf.Body(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n", "labels": {"nvidia.com/gpu.product": "H100"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}] * 10},
        }
    )
    assert STORE.build(body=node) == {}
    assert STORE.fetch(body=node) is None
    rayservice = kopf.Body({"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {}})
    assert STORE.build(body=rayservice) == {}
