"""The node weight cache's two messages (issue 24): ``status.weights`` of an InferenceModel (the
operator tells the node cache agents what to fill) and each agent's report (one ConfigMap per
node, which the operator sums into ``status.weights`` and the ``Cached`` condition).

Pure: names and shapes only; the agent (ridgeline_serving.node_cache) and the operator do the I/O.
"""

from __future__ import annotations

import enum
import hashlib
import re
from datetime import datetime

from pydantic import ConfigDict, Field

from ridgeline.api.base import ApiModel

# The agent's report: a ConfigMap in the agent's (the operator's) namespace, one per node.
REPORT_KEY = "report.json"
REPORT_NAME_PREFIX = "ridgeline-node-cache-"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "ridgeline"
COMPONENT_LABEL = "app.kubernetes.io/component"
REPORT_COMPONENT = "node-cache-report"
NODE_LABEL = "ridgeline.dev/node"
# The agent's Prometheus endpoint (/metrics).
METRICS_PORT = 9450
# The node root's default (chart value nodeCache.hostPath).
DEFAULT_ROOT = "/var/lib/ridgeline/weights"

_MAX_NAME = 253
_MAX_LABEL_VALUE = 63
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def report_name(node: str) -> str:
    """The report ConfigMap's name for ``node``: truncated and suffixed with a hash of the
    node's name when prefix + name would pass the 253 characters of an object name."""
    name = REPORT_NAME_PREFIX + node
    if len(name) <= _MAX_NAME:
        return name
    suffix = "-" + _short_hash(node)
    return name[: _MAX_NAME - len(suffix)].rstrip("-.") + suffix


def node_label_value(node: str) -> str:
    """``node`` as a label value: itself when it is a valid one (at most 63 characters), else
    a hash of it (node names are DNS subdomains of up to 253 characters)."""
    if len(node) <= _MAX_LABEL_VALUE and _LABEL_VALUE.fullmatch(node):
        return node
    return "h-" + _short_hash(node)


def report_labels(node: str) -> dict[str, str]:
    """The labels of ``node``'s report ConfigMap; the operator lists reports by the first two."""
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        COMPONENT_LABEL: REPORT_COMPONENT,
        NODE_LABEL: node_label_value(node),
    }


class CheckpointState(enum.StrEnum):
    """Where one checkpoint stands on one node."""

    COMPLETE = "Complete"  # ``current`` names the store's newest digest and it verifies
    FILLING = "Filling"  # downloading (or verifying) that digest
    WAITING = "Waiting"  # the size budget has no room for it yet; the message says how much
    FAILED = "Failed"  # the store, the credentials or the disk failed; the message says why


class CheckpointReport(ApiModel):
    """One checkpoint directory on one node."""

    # The agent (serving image) and the operator are released separately: a field a newer
    # agent adds is ignored by an older operator, not a report it cannot read.
    model_config = ConfigDict(extra="ignore")

    uri: str = Field(description="The checkpoint's URI (spec.model.uri).")
    digest: str | None = Field(
        default=None,
        description="The store's newest version as the agent last listed it (or current's "
        "digest when the store could not be listed).",
    )
    current_digest: str | None = Field(
        default=None, description="The digest the directory's `current` names; null: none yet."
    )
    state: CheckpointState = Field(description="Complete, Filling, Waiting or Failed.")
    bytes: int = Field(default=0, ge=0, description="Bytes of `digest` present on the node.")
    total_bytes: int = Field(default=0, ge=0, description="Bytes of `digest` in all.")
    bytes_per_second: float = Field(
        default=0.0, ge=0, description="Fill rate while filling, else 0."
    )
    message: str = Field(default="", description="Why it waits or failed; empty otherwise.")
    models: list[str] = Field(
        default_factory=list, description="The models (namespace/name) that need it."
    )


class NodeCacheReport(ApiModel):
    """What the agent on one node holds (ConfigMap data key ``report.json``)."""

    model_config = ConfigDict(extra="ignore")  # as CheckpointReport: across releases

    node: str = Field(description="The node's name.")
    updated: datetime = Field(description="When the agent wrote this report.")
    budget_bytes: int = Field(ge=0, description="The node's size budget (nodeCache.sizeBudget).")
    used_bytes: int = Field(ge=0, description="Bytes the cache uses on the node.")
    checkpoints: dict[str, CheckpointReport] = Field(
        default_factory=dict,
        description="By checkpoint directory (cache_key of the URI) under the node root.",
    )


class WeightsStatus(ApiModel):
    """``status.weights``: where the model's checkpoint is cached on its pool's nodes. Present
    only when the platform enables the node cache and the model is planned."""

    uri: str = Field(description="spec.model.uri.")
    directory: str = Field(description="The checkpoint's directory under the node cache root.")
    bytes: int = Field(default=0, ge=0, description="Checkpoint bytes (0 if unknown).")
    node_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels a node of the planned pool carries; empty: every node with an agent.",
    )
    nodes_complete: int = Field(default=0, ge=0, description="Nodes whose copy is complete.")
    nodes_filling: int = Field(default=0, ge=0, description="Nodes filling their copy.")
    nodes: int = Field(
        default=0, ge=0, description="Agents on matching nodes that report this directory."
    )
    bytes_cached: int = Field(
        default=0, ge=0, description="Bytes present, the mean over the reporting nodes."
    )
    bytes_per_second: float = Field(
        default=0.0, ge=0, description="Fill rate, summed over the filling nodes."
    )
    seconds_left: float | None = Field(
        default=None,
        ge=0,
        description="While filling: bytes still missing over all nodes / fill rate; absent "
        "when nothing fills or the rate is 0.",
    )
