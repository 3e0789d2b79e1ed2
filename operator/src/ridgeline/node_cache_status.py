"""``status.weights`` and the ``Cached`` condition from the node cache agents' reports (issue
24), pure: the agents say what each node holds, this sums it for one model.

Only agents on nodes of the model's pool report its directory (an agent fills, and reports,
the directories of the models whose ``status.weights.nodeLabels`` its node carries), so the
reports that name the directory are the pool's nodes that run an agent."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ridgeline.api.inference_model import InferenceModel
from ridgeline.api.node_cache import (
    CheckpointReport,
    CheckpointState,
    NodeCacheReport,
    WeightsStatus,
)
from ridgeline.api.node_cache_scope import covers
from ridgeline.conditions import Reason, Status
from ridgeline.planner.pools import NodePool
from ridgeline.platform_config import PlatformConfig
from ridgeline.render.node_cache import checkpoint_directory, node_labels

GB = 1e9
MB = 1e6
# How many nodes a Failed or Waiting message names (the rest are counted).
LISTED = 2


@dataclass(frozen=True)
class _Entry:
    node: str
    report: CheckpointReport


def _entries(directory: str, reports: Iterable[NodeCacheReport]) -> list[_Entry]:
    found = [
        _Entry(r.node, r.checkpoints[directory]) for r in reports if directory in r.checkpoints
    ]
    return sorted(found, key=lambda e: e.node)


def _complete(entry: CheckpointReport) -> bool:
    """The store's newest version is the one ``current`` names, and it verified."""
    return (
        entry.state == CheckpointState.COMPLETE
        and entry.digest is not None
        and entry.current_digest == entry.digest
    )


def weights_status(
    uri: str,
    directory: str,
    checkpoint_bytes: int,
    node_labels: dict[str, str],
    reports: Iterable[NodeCacheReport],
) -> WeightsStatus:
    """``bytesCached`` is the mean over the reporting nodes of the bytes each holds of the
    version it fills (a node holds all of it or is filling it); ``secondsLeft`` the bytes all
    filling nodes still miss over their summed rate."""
    entries = _entries(directory, reports)
    filling = [e.report for e in entries if e.report.state == CheckpointState.FILLING]
    rate = sum(e.bytes_per_second for e in filling)
    missing = sum(max((e.total_bytes or checkpoint_bytes) - e.bytes, 0) for e in filling)
    present = sum(e.report.bytes for e in entries)
    return WeightsStatus(
        uri=uri,
        directory=directory,
        bytes=checkpoint_bytes,
        node_labels=dict(node_labels),
        nodes_complete=sum(_complete(e.report) for e in entries),
        nodes_filling=len(filling),
        nodes=len(entries),
        bytes_cached=present // len(entries) if entries else 0,
        bytes_per_second=round(rate, 1),
        seconds_left=round(missing / rate, 1) if filling and rate > 0 else None,
    )


def model_weights(
    model: InferenceModel,
    checkpoint_bytes: int | None,
    config: PlatformConfig,
    pool: NodePool,
    old: WeightsStatus | None,
    reports: Iterable[NodeCacheReport],
) -> WeightsStatus | None:
    """A planned model's ``status.weights`` (None where the node cache is disabled, or does not
    cover the model's scheme: ``node_cache_scope``). Where the shape is unknown this pass
    (storage unreachable), the size last known for the same URI."""
    uri = model.spec.model.uri
    if not config.node_cache.enabled or not covers(uri):
        return None
    if checkpoint_bytes is None:
        checkpoint_bytes = old.bytes if old is not None and old.uri == uri else 0
    directory = checkpoint_directory(uri)
    return weights_status(uri, directory, checkpoint_bytes, node_labels(pool), reports)


def _labels_text(labels: dict[str, str]) -> str:
    if not labels:
        return "any node"
    return "a node with labels " + ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _named(entries: list[_Entry]) -> str:
    named = "; ".join(
        f"node {e.node}: {e.report.message or e.report.state}" for e in entries[:LISTED]
    )
    more = len(entries) - LISTED
    return named + (f"; and {more} more node{'s' if more > 1 else ''}" if more > 0 else "")


def _filling_message(weights: WeightsStatus, entries: list[_Entry]) -> str:
    present = sum(e.report.bytes for e in entries)
    total = sum(e.report.total_bytes or weights.bytes for e in entries)
    parts = [
        f"{weights.nodes_complete} of {weights.nodes} nodes complete",
        f"{present / GB:.1f} of {total / GB:.1f} GB",
    ]
    if weights.bytes_per_second > 0:
        parts.append(f"{weights.bytes_per_second / MB:.0f} MB/s")
    if weights.seconds_left is not None:
        parts.append(f"about {weights.seconds_left:.0f} s left")
    return ", ".join(parts)


def cached_condition(
    weights: WeightsStatus, reports: Iterable[NodeCacheReport]
) -> tuple[Status, Reason, str]:
    """Cached: True once every reporting node holds the store's newest version; else why not,
    a node's failure first (it needs someone), then a budget that has no room, then the fill."""
    entries = _entries(weights.directory, reports)
    if not entries:
        return (
            "False",
            Reason.NO_AGENT,
            f"no node cache agent reports checkpoint {weights.directory}: none runs on "
            f"{_labels_text(weights.node_labels)} (the replicas download the weights "
            "themselves meanwhile)",
        )
    failed = [e for e in entries if e.report.state == CheckpointState.FAILED]
    if failed:
        return "False", Reason.CACHE_FAILED, _named(failed)
    waiting = [e for e in entries if e.report.state == CheckpointState.WAITING]
    if waiting:
        return "False", Reason.CACHE_WAITING, _named(waiting)
    if weights.nodes_complete == weights.nodes:
        return (
            "True",
            Reason.CACHE_COMPLETE,
            f"complete on {weights.nodes} of {weights.nodes} nodes "
            f"({weights.bytes / GB:.1f} GB each)",
        )
    return "False", Reason.CACHE_FILLING, _filling_message(weights, entries)
