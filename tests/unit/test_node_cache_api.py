"""The node cache's wire shapes: the report ConfigMap's name and labels, and the JSON keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from ridgeline.api.node_cache import (
    CheckpointReport,
    CheckpointState,
    NodeCacheReport,
    WeightsStatus,
    node_label_value,
    report_labels,
    report_name,
)


def test_report_name_short_node_is_prefixed() -> None:
    assert report_name("node-1") == "ridgeline-node-cache-node-1"


def test_report_name_long_node_is_truncated_with_a_hash() -> None:
    long_a = "a" * 250
    long_b = "a" * 249 + "b"
    assert len(report_name(long_a)) <= 253
    assert report_name(long_a) != report_name(long_b)


def test_node_label_value_hashes_what_is_not_a_label_value() -> None:
    assert node_label_value("ip-10-0-0-1.ec2.internal") == "ip-10-0-0-1.ec2.internal"
    hashed = node_label_value("n" * 64)
    assert len(hashed) <= 63
    assert hashed != node_label_value("n" * 65)
    assert report_labels("node-1")["ridgeline.dev/node"] == "node-1"


def test_report_json_keys_are_camel_case() -> None:
    report = NodeCacheReport(
        node="node-1",
        updated=datetime(2026, 12, 6, 8, 0, tzinfo=UTC),
        budget_bytes=100,
        used_bytes=10,
        checkpoints={
            "m-abc": CheckpointReport(
                uri="s3://b/m",
                digest="d1",
                current_digest=None,
                state=CheckpointState.FILLING,
                bytes=10,
                total_bytes=20,
                bytes_per_second=5.0,
                models=["ns/m"],
            )
        },
    )
    wire = json.loads(report.model_dump_json(by_alias=True))
    assert wire["updated"] == "2026-12-06T08:00:00Z"
    assert wire["budgetBytes"] == 100
    entry = wire["checkpoints"]["m-abc"]
    assert entry["currentDigest"] is None
    assert entry["state"] == "Filling"
    assert entry["totalBytes"] == 20
    assert NodeCacheReport.model_validate(wire) == report


def test_weights_status_reads_the_operators_block() -> None:
    status = WeightsStatus.model_validate(
        {
            "uri": "s3://b/m",
            "directory": "b_m-0123456789ab",
            "bytes": 5,
            "nodeLabels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        }
    )
    assert status.node_labels == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert status.seconds_left is None


def test_a_newer_agents_report_is_read_by_an_older_operator() -> None:
    """Agent and operator images are released separately: fields a newer agent adds are
    ignored, not a report the operator cannot read (which would make every model NoAgent)."""
    wire = {
        "node": "n",
        "updated": "2026-12-06T08:00:00Z",
        "budgetBytes": 0,
        "usedBytes": 0,
        "diskModel": "nvme",
        "checkpoints": {"d": {"uri": "s3://b/m", "state": "Complete", "readRate": 3.0}},
    }
    report = NodeCacheReport.model_validate(wire)
    assert report.checkpoints["d"].state == CheckpointState.COMPLETE
