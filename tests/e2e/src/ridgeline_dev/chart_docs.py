"""charts/ridgeline/README.md from values.yaml: every key with its `# --` comment, type and
default (`make chart-docs`; a test fails when the README is stale or a key is undocumented)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[4] / "charts" / "ridgeline"
KEY = re.compile(r"^(\s*)([A-Za-z0-9_]+):(.*)$")


def documented_keys(values_text: str) -> dict[str, str]:
    """Dotted key -> its doc comment; a key without a comment maps to ''."""
    docs: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and pending:
            pending.append(stripped[1:].strip())
            continue
        match = KEY.match(line)
        if not match or stripped.startswith("-"):
            if not stripped.startswith("#"):
                pending = []
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        docs[".".join(k for _, k in stack)] = " ".join(pending)
        pending = []
    return docs


def _is_section(key: str, value: Any, docs: dict[str, str]) -> bool:
    return isinstance(value, dict) and any(docs.get(f"{key}.{k}") for k in value)


def undocumented(values_text: str) -> list[str]:
    """Leaf keys with no doc comment of their own or on an enclosing key."""
    docs = documented_keys(values_text)
    values = yaml.safe_load(values_text)
    out = []
    for key, doc in docs.items():
        if doc or _is_section(key, _lookup(values, key), docs):
            continue
        parts = key.split(".")
        if not any(docs.get(".".join(parts[:i])) for i in range(1, len(parts))):
            out.append(key)
    return out


def _lookup(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        node = node[part]
    return node


def render() -> str:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    docs = documented_keys(text)
    for key, doc in docs.items():
        value = _lookup(values, key)
        if not doc or _is_section(key, value, docs):
            continue  # a section's keys have rows of their own; undocumented keys are refused
        kind = type(value).__name__.replace("NoneType", "null").replace("str", "string")
        default = json.dumps(value)
        if len(default) > 80:
            default = "see values.yaml"
        rows.append(f"| `{key}` | {kind} | `{default}` | {doc} |")
    return "\n".join(
        [
            f"# {chart['name']} Helm chart",
            "",
            chart["description"],
            "",
            "Generated from values.yaml by `make chart-docs`.",
            "",
            "```bash",
            "helm install ridgeline charts/ridgeline -n ridgeline-system --create-namespace",
            "helm test ridgeline -n ridgeline-system",
            "```",
            "",
            "Prerequisites: the KubeRay operator (RayService `ray.io/v1`) and NVIDIA GPU Feature "
            "Discovery labels on GPU nodes.",
            "",
            "CRDs: the `InferenceModel` CRD is in `crds/` (identical to the repository's `crds/`, "
            "checked by a test). Helm installs CRDs on first install only and never upgrades or "
            "deletes them; upgrade it yourself before `helm upgrade`: "
            "`kubectl apply --server-side -f charts/ridgeline/crds/`.",
            "",
            "## Values",
            "",
            *rows,
            "",
        ]
    )


def main() -> int:
    (CHART / "README.md").write_text(render())
    missing = undocumented((CHART / "values.yaml").read_text())
    if missing:
        print(f"undocumented values: {missing}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
