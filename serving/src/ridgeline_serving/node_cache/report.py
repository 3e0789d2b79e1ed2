"""The agent's report (pure): what each checkpoint's state is, as ``report.json`` carries it,
and whether a new report says anything the last one did not (its time aside)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from ridgeline.api.node_cache import CheckpointReport, CheckpointState, NodeCacheReport
from ridgeline_serving.node_cache.decide import Need


@dataclass
class Entry:
    """One checkpoint's state as the agent's pass leaves it (mutable: a fill updates it)."""

    state: CheckpointState
    digest: str | None = None
    current_digest: str | None = None
    bytes: int = 0
    total_bytes: int = 0
    bytes_per_second: float = 0.0
    message: str = ""


def build_report(
    node: str,
    now: float,
    budget: int,
    used: int,
    needs: Mapping[str, Need],
    entries: Mapping[str, Entry],
) -> NodeCacheReport:
    """The report of every needed checkpoint; one the pass has not reached yet is Waiting."""
    checkpoints = {}
    for directory, need in needs.items():
        entry = entries.get(directory) or Entry(CheckpointState.WAITING, total_bytes=need.bytes)
        checkpoints[directory] = CheckpointReport(
            uri=need.uri,
            digest=entry.digest,
            current_digest=entry.current_digest,
            state=entry.state,
            bytes=entry.bytes,
            total_bytes=entry.total_bytes,
            bytes_per_second=round(entry.bytes_per_second, 1),
            message=entry.message,
            models=[ref.key for ref in need.models],
        )
    return NodeCacheReport(
        node=node,
        updated=datetime.fromtimestamp(int(now), UTC),
        budget_bytes=budget,
        used_bytes=used,
        checkpoints=checkpoints,
    )


def report_text(report: NodeCacheReport) -> str:
    return report.model_dump_json(by_alias=True, indent=1)


def same_report(a: NodeCacheReport | None, b: NodeCacheReport) -> bool:
    """Whether ``b`` says what ``a`` said (the time it was written aside)."""
    return a is not None and a.model_copy(update={"updated": b.updated}) == b


def fill_rate(prev_bytes: int, prev_t: float, now_bytes: int, now_t: float) -> float:
    """Bytes per second between two samples of a fill; 0 when no time passed or bytes fell."""
    dt = now_t - prev_t
    return max(0.0, (now_bytes - prev_bytes) / dt) if dt > 0 else 0.0
