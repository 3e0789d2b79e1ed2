"""The CRD is generated from the pydantic models and documents every field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from ridgeline.api import InferenceModelSpec
from ridgeline.api.crd import build_crd, render_crd_yaml, render_reference_markdown
from tests.conftest import REPO

CRD_PATH = REPO / "crds" / "ridgeline.dev_inferencemodels.yaml"


def test_committed_crd_matches_the_models() -> None:
    assert CRD_PATH.read_text() == render_crd_yaml(), "run `make crds` and commit the result"


def test_committed_reference_matches_the_models() -> None:
    text = (REPO / "docs" / "crd-reference.md").read_text()
    assert text == render_reference_markdown(), "run `make crds` and commit the result"


def _walk(schema: dict[str, Any], path: str) -> list[str]:
    missing = []
    for name, sub in schema.get("properties", {}).items():
        here = f"{path}.{name}"
        if name != "metadata" and not sub.get("description"):
            missing.append(here)
        missing += _walk(sub, here)
        if "items" in sub:
            missing += _walk(sub["items"], here + "[]")
        if isinstance(sub.get("additionalProperties"), dict):
            missing += _walk(sub["additionalProperties"], here + "{}")
    return missing


def _root() -> dict[str, Any]:
    schema: dict[str, Any] = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_every_field_has_a_description() -> None:
    assert _walk(_root(), "") == []


def test_structural_schema_has_no_refs_or_nulls() -> None:
    text = CRD_PATH.read_text()
    for banned in ("$ref", "anyOf", "null", "title:", "additionalProperties: false"):
        assert banned not in text


def test_defaults_and_status_subresource() -> None:
    crd = build_crd()
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["quantization"]["default"] == "none"
    assert spec["workload"]["default"] == {"mode": "online", "maxContextTokens": 4096}
    assert spec["replicas"]["default"] == {"min": 1, "max": 1, "scaleDownDelaySeconds": 300}
    assert spec["workload"]["properties"]["maxContextTokens"]["default"] == 4096
    assert spec["replicas"]["properties"]["min"]["default"] == 1
    cols = [c["name"] for c in version["additionalPrinterColumns"]]
    assert cols == ["Model", "GPU", "GPUs", "Ready", "Desired", "Status", "Age"]


def _collect(schema: dict[str, Any]) -> list[dict[str, str]]:
    out = list(schema.get("x-kubernetes-validations", []))
    for sub in schema.get("properties", {}).values():
        out += _collect(sub)
    return out


@pytest.mark.parametrize(
    ("spec", "message", "rule_part"),
    [
        (
            {"replicas": {"min": 3, "max": 1}},
            "replicas.min must not exceed",
            "self.min <= self.max",
        ),
        (
            {"workload": {"mode": "batch", "slo": {"timePerOutputTokenMs": 20}}},
            "slo applies to mode: online only",
            "!has(self.slo)",
        ),
        ({"model": {"uri": "ftp://x/y"}}, "model.uri must be", "self.uri.matches"),
        (
            {"model": {"uri": "file:///m", "credentialsSecret": "s"}},
            "credentialsSecret applies",
            "!has(self.credentialsSecret)",
        ),
    ],
)
def test_cross_field_rules_exist_in_pydantic_and_cel(
    spec: dict[str, Any], message: str, rule_part: str
) -> None:
    doc: dict[str, Any] = {"model": {"uri": "s3://models/x"}, **spec}
    with pytest.raises(ValidationError, match=message):
        InferenceModelSpec.model_validate(doc)
    rules = _collect(_root())
    matching = [r for r in rules if rule_part in r["rule"]]
    assert matching, f"no CEL rule with {rule_part!r}"
    assert message.split(":")[0] in matching[0]["message"]


@pytest.mark.parametrize(
    "uri",
    [
        "s3://models/meta-llama/Llama-3.1-8B",
        "gs://bucket",
        "hf://Qwen/Qwen2-7B@main",
        "hf://org/name",
        "file:///models/tiny",
    ],
)
def test_valid_uris(uri: str) -> None:
    InferenceModelSpec.model_validate({"model": {"uri": uri}})


@pytest.mark.parametrize("uri", ["s3://", "hf://justorg", "file://relative", "/abs/path", "x"])
def test_invalid_uris(uri: str) -> None:
    with pytest.raises(ValidationError):
        InferenceModelSpec.model_validate({"model": {"uri": uri}})


def test_examples_are_valid() -> None:
    from ridgeline.manifest import load_inference_model

    for path in sorted((REPO / "examples").glob("*.yaml")):
        if path.name != "pools.yaml":
            load_inference_model(path)
