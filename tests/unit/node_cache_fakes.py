"""What the node cache agent's tests share: a cluster in memory, models with status.weights, a
local store that counts the bytes it serves, and an agent on a tmp node root."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ridgeline.api.node_cache import NodeCacheReport
from ridgeline.api.node_cache_scope import SCHEMES
from ridgeline.storage.credentials import CredentialsError, decode_secret_data
from ridgeline.storage.download import cache_key
from ridgeline_serving.node_cache.agent import Agent
from ridgeline_serving.node_cache.settings import Settings


class FakeCluster:
    def __init__(self, models: list[dict[str, Any]], labels: dict[str, str] | None = None) -> None:
        self.models = models
        self.labels = labels or {}
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.reports: dict[str, str] = {}
        self.writes = 0
        self.secret_reads = 0

    def list_models(self) -> list[dict[str, Any]]:
        copied: list[dict[str, Any]] = json.loads(json.dumps(self.models))
        return copied

    def node_labels(self, node: str) -> dict[str, str]:
        return dict(self.labels)

    def add_secret(self, namespace: str, name: str, values: Mapping[str, str]) -> None:
        self.secrets[(namespace, name)] = {
            k: base64.b64encode(v.encode()).decode() for k, v in values.items()
        }

    def read_credentials(self, namespace: str, name: str) -> dict[str, str]:
        self.secret_reads += 1
        if (namespace, name) not in self.secrets:
            raise CredentialsError(f"credentialsSecret {namespace}/{name}: not found")
        return decode_secret_data(namespace, name, self.secrets[(namespace, name)])

    def write_report(self, namespace: str, name: str, labels: Mapping[str, str], text: str) -> bool:
        if self.reports.get(name) == text:
            return False
        self.reports[name] = text
        self.writes += 1
        return True

    def report(self) -> NodeCacheReport:
        (text,) = self.reports.values()
        return NodeCacheReport.model_validate_json(text)


def model(
    name: str,
    uri: str,
    namespace: str = "ns",
    labels: dict[str, str] | None = None,
    secret: str | None = None,
    size: int = 0,
) -> dict[str, Any]:
    source: dict[str, Any] = {"uri": uri}
    if secret:
        source["credentialsSecret"] = secret
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": source},
        "status": {
            "weights": {
                "uri": uri,
                "directory": cache_key(uri),
                "bytes": size,
                "nodeLabels": labels or {},
            }
        },
    }


def write_model(root: Path, shard: bytes = b"w" * 4096, tag: str = "") -> str:
    """A checkpoint in a local directory; returns its file:// URI."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"model_type": "llama", "tag": tag}))
    (root / "model-00001.safetensors").write_bytes(shard)
    (root / "model-00002.safetensors").write_bytes(shard[::-1] + b"2")
    return root.as_uri()


class Clock:
    """Wall time plus an offset a test moves forward (the grace period reads file mtimes)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def settings(root: Path, budget: int = 0, grace_s: float = 60.0) -> Settings:
    return Settings(
        node="node-1",
        namespace="ridgeline-system",
        root=root,
        budget_bytes=budget,
        grace_s=grace_s,
        resync_s=1.0,
        metrics_port=0,
        parallel=2,
    )


# The agent fills object stores only; these tests use local directories as stores.
WITH_FILES = (*SCHEMES, "file")


def make_agent(
    root: Path, cluster: FakeCluster, schemes: tuple[str, ...] = WITH_FILES, **kw: Any
) -> tuple[Agent, Clock]:
    clock = Clock()
    return Agent(settings(root, **kw), cluster, clock=clock, schemes=schemes), clock


def sample(agent: Agent, name: str, **labels: str) -> float:
    value = agent.metrics.registry.get_sample_value(
        f"ridgeline_node_cache_{name}", {"node": "node-1", **labels}
    )
    return value or 0.0
