"""Generate the InferenceModel CustomResourceDefinition from the pydantic models.

Pydantic emits JSON Schema 2020-12; Kubernetes wants a structural OpenAPI v3.0 subset. The
conversion inlines ``$ref``s, drops ``title`` and ``null`` branches (optional fields are simply
absent), turns numeric ``exclusiveMinimum`` into the 3.0 boolean form, and keeps
``description``, ``default``, ``enum``, bounds, patterns and ``x-kubernetes-*`` extensions.
"""

from __future__ import annotations

from typing import Any

from ridgeline.api.inference_model import (
    GROUP,
    KIND,
    NAME_MESSAGE,
    NAME_RULE,
    PLURAL,
    VERSION,
    InferenceModelSpec,
    InferenceModelStatus,
)

_KEEP = {
    "type",
    "description",
    "default",
    "enum",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "format",
}

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {
        "name": "Model",
        "type": "string",
        "jsonPath": ".spec.model.uri",
        "description": "Model root URI",
    },
    {
        "name": "GPU",
        "type": "string",
        "jsonPath": ".status.plan.gpuProduct",
        "description": "Planned GPU product",
    },
    {
        "name": "GPUs",
        "type": "integer",
        "jsonPath": ".status.plan.gpusPerReplica",
        "description": "GPUs per replica",
    },
    {
        "name": "Ready",
        "type": "integer",
        "jsonPath": ".status.replicas.ready",
        "description": "Replicas serving",
    },
    {
        "name": "Desired",
        "type": "integer",
        "jsonPath": ".status.replicas.desired",
        "description": "Replicas wanted by autoscaling",
    },
    {
        "name": "Status",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "description": "Reason of the Ready condition",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _convert(node: Any, defs: dict[str, Any]) -> Any:
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, defs)
    for key in ("anyOf", "oneOf"):
        if key in node:
            branches = [b for b in node[key] if b.get("type") != "null"]
            if len(branches) != 1:
                raise ValueError(f"cannot express {key} with {len(branches)} branches in a CRD")
            rest = {k: v for k, v in node.items() if k != key}
            return _convert({**branches[0], **rest}, defs)
    if "allOf" in node and len(node["allOf"]) == 1:
        rest = {k: v for k, v in node.items() if k != "allOf"}
        return _convert({**node["allOf"][0], **rest}, defs)
    if "const" in node:
        node = {**{k: v for k, v in node.items() if k != "const"}, "enum": [node["const"]]}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: _convert(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _convert(value, defs)
        elif key == "additionalProperties":
            # extra="forbid": the API server prunes unknown fields (and refuses them under
            # strict field validation); a structural schema may not say `false`.
            continue
        elif key == "exclusiveMinimum":
            out["minimum"] = value
            out["exclusiveMinimum"] = True
        elif key == "exclusiveMaximum":
            out["maximum"] = value
            out["exclusiveMaximum"] = True
        elif key == "default" and value is None:
            continue
        elif key in _KEEP or key.startswith("x-kubernetes-"):
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "properties" in out:
        out["type"] = "object"
    return out


def openapi_schema(model: type[Any]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.pop("$defs", {})
    result: dict[str, Any] = _convert(schema, defs)
    return result


def _status_schema() -> dict[str, Any]:
    schema = openapi_schema(InferenceModelStatus)
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return schema


def build_crd() -> dict[str, Any]:
    root = {
        "type": "object",
        "description": (
            "InferenceModel is a model to serve: Ridgeline sizes it on the roofline, picks GPUs "
            "and a CUDA image that the nodes' driver runs, and serves it on KubeRay with an "
            "OpenAI-compatible API."
        ),
        "required": ["spec"],
        # The API server refuses a name KubeRay would refuse later: nothing is half-created.
        "x-kubernetes-validations": [{"rule": NAME_RULE, "message": NAME_MESSAGE}],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of the object."},
            "kind": {"type": "string", "description": "Kind of the object."},
            "metadata": {"type": "object"},
            "spec": openapi_schema(InferenceModelSpec),
            "status": _status_schema(),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "ridgeline"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["im"],
                "categories": ["ridgeline"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render_crd_yaml() -> str:
    import yaml

    header = "# Generated from operator/src/ridgeline/api by `make crds`. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


def _reference_rows(schema: dict[str, Any], path: str) -> list[str]:
    rows = []
    for name, sub in schema.get("properties", {}).items():
        here = f"{path}.{name}" if path else name
        kind = sub.get("type", "")
        if kind == "array":
            kind = f"[]{sub.get('items', {}).get('type', '')}"
        extra = []
        if "default" in sub and sub["default"] != {}:
            extra.append(f"default `{sub['default']}`")
        if "enum" in sub:
            extra.append("one of " + ", ".join(f"`{v}`" for v in sub["enum"]))
        for key, label in (("minimum", "min"), ("maximum", "max")):
            if key in sub:
                extra.append(f"{label} {sub[key]}")
        desc = " ".join(str(sub.get("description", "")).split())
        suffix = f" ({'; '.join(extra)})" if extra else ""
        rows.append(f"| `{here}` | {kind} | {desc}{suffix} |")
        rows += _reference_rows(sub, here)
        if isinstance(sub.get("items"), dict):
            rows += _reference_rows(sub["items"], here + "[]")
    return rows


def render_reference_markdown() -> str:
    """docs/crd-reference.md: every field, from the same schema `kubectl explain` reads."""
    props = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    parts = [
        "# InferenceModel reference (ridgeline.dev/v1alpha1)",
        "",
        "Generated by `make crds` from the pydantic models; `kubectl explain "
        "inferencemodel.spec` prints the same text.",
        "",
    ]
    for section in ("spec", "status"):
        parts += [f"## {section}", "", "| field | type | description |", "|---|---|---|"]
        parts += _reference_rows(props[section], section)
        parts.append("")
    rules = [f"- `{rule['rule']}`: {rule['message']}" for rule in _validations(props["spec"])]
    parts += ["## Validation rules (CEL)", "", *rules, ""]
    return "\n".join(parts)


def _validations(schema: dict[str, Any]) -> list[dict[str, str]]:
    out = list(schema.get("x-kubernetes-validations", []))
    for sub in schema.get("properties", {}).values():
        out += _validations(sub)
    return out
