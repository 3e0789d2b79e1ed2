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


ACCESS = [
    "## What the operator can read, and what is exposed",
    "",
    "The operator's ClusterRole (`templates/rbac.yaml`) grants exactly what it uses:",
    "",
    "- InferenceModels: get, list, watch, patch (and their status); RayServices: get, list, "
    "watch, create, patch (server-side apply); RayClusters: get, list, watch, and delete under "
    "`serving.upgradeStrategy: Recreate`; Nodes: get, list, watch (GPU Feature Discovery "
    "labels and allocatable); CRDs: get, list, watch (kopf's discovery); Events: create, patch; "
    "NetworkPolicies: get, create, patch.",
    "- Secrets: `get` and `create`, never list or watch. `get` reads the one Secret an "
    "InferenceModel names in `spec.model.credentialsSecret`, when it reads that model's shape "
    "(`config.json` and safetensors headers, ranged reads, no tensor data) with the model's own "
    "credentials: the keys `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, "
    "`AWS_ENDPOINT_URL`, `AWS_REGION`, `GCS_ENDPOINT_URL`, `HF_TOKEN`, `HF_ENDPOINT`. Values "
    "are held for the read only: never cached, logged, written to status or copied. A model "
    "without `credentialsSecret` is read with the operator's own environment, to which the "
    "chart gives no credentials. `create` makes each model's Ray token Secret. With "
    "`operator.watchNamespaces` set, these two verbs are granted by a Role in each watched "
    "namespace instead of the ClusterRole.",
    "- With `nodeCache.enabled`: PersistentVolumes and PersistentVolumeClaims: get, list, "
    "create, patch, delete (a volume over each model's checkpoint directory on the nodes, its "
    "claim in the model's namespace); ConfigMaps in the release namespace only: get, list "
    "(the node cache agents' reports, a Role).",
    "- The node cache agent (`nodeCache.enabled`, ServiceAccount `<release>-node-cache`): "
    "InferenceModels get, list, watch; Nodes get (its own node's labels); Secrets get (the "
    "`credentialsSecret` of a model whose checkpoint it downloads, read while it downloads, "
    "never copied or logged; a Role in each of `operator.watchNamespaces` where set); "
    "ConfigMaps get, create, patch, update in the release namespace (its report). It runs as "
    "root in its own pod, with no capabilities and a read-only root filesystem, to write the "
    "node directory (`nodeCache.hostPath`, a hostPath): the release namespace needs Pod "
    "Security `privileged`; model namespaces stay `restricted`.",
    "- A user who may create InferenceModels makes the operator read object storage at the "
    "URI and endpoint they give, with their own Secret: give that right only to those you "
    "would let run pods with those credentials.",
    "",
    "Each model runs a RayCluster (KubeRay) with, by default:",
    "",
    "- Ray token authentication (`serving.rayTokenAuth`): a Secret `<model>-ray-token` per "
    "model, owned by the InferenceModel, with a random token; KubeRay gives it to every Ray "
    "container, and Ray's GCS, dashboard and job submission refuse requests without it.",
    "- A NetworkPolicy `<model>-ray` (`serving.networkPolicy`): from outside the model's own "
    "pods, only the serve port (`serving.servePort`, the OpenAI-compatible API, Service "
    "`<model>-serve-svc`) is open to every pod; the dashboard port 8265 to the KubeRay "
    "operator; the metrics port 8080 to `serving.networkPolicy.metricsFrom` only. The GCS "
    "(6379), client (10001) and every other Ray port are reachable from the model's own pods "
    "only. It needs a CNI that enforces NetworkPolicy.",
    "- Pods admitted under Pod Security `restricted` (non-root uid 1000, RuntimeDefault "
    "seccomp, no privilege escalation, all capabilities dropped, an `emptyDir` weight cache), "
    "except with `serving.weightsCacheVolume: hostPath`.",
    "",
    "## Request limits on the serve port",
    "",
    "The serve port is open to every pod (above), so each replica bounds what one request may cost",
    'it (details and the reasons: `docs/serving.md`, "Request limits"):',
    "",
    "- body size: 6 x 32 bytes per token of `spec.workload.maxContextTokens` + 1 MiB (2.5 MiB for an",  # noqa: E501
    "  8192-token context): 413 above it, before the body is read when `Content-Length` says so;",
    "- request line and headers: 16 KiB (431), complete within 10 s of the connection or of its",
    "  next request (408), at most 4,096 connections per client address (503), in Serve's proxy;",
    "- body time: the whole body within 10 s of the first byte (`body_timeout_s` in ServingArgs),",
    "  else 408 and the slot is freed; a body still arriving after 1 s takes one of 4 slow-body",
    "  slots or is cut off at once (408);",
    "- prompt size: at most 32 characters per token of the context, checked before tokenizing (400);",  # noqa: E501
    "  prompt plus `max_tokens` within the context (400);",
    "- queue: the planned batch plus `max_queued_requests` (the batch again) per replica, counted",
    "  from a request's complete body until its work is gone (a disconnected client's sequences",
    "  included, until the engine has dropped them): 429 with `Retry-After: 1` beyond it; Serve's",
    "  router holds up to 4 x the batch more, then answers 503;",
    "- `/health` and `/v1/models` keep 4 of the 8 Serve slots beyond batch + queue",
    "  (`ongoing_requests_headroom`; slow bodies take at most the other 4), so they answer while",
    "  every admitted slot is busy; a chat template that runs past 2 s is stopped (500).",
    "",
    "Serve's own `request_timeout_s` is left unset: it is end-to-end and would cut long generations.",  # noqa: E501
    "",
]


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
            *ACCESS,
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
