"""One node's agent: each pass reads which checkpoints the node needs, checks what ``current``
names (stats every pass, sha256 once per agent start), lists each store with its models' own
credentials, fills the versions that are missing (evicting under the budget first), deletes
what the grace period frees, and publishes the report. No failure of one checkpoint stops the
others; a failed pass is logged and retried at the next resync.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ridgeline.api.node_cache import (
    CheckpointState,
    NodeCacheReport,
    report_labels,
    report_name,
)
from ridgeline.api.node_cache_scope import SCHEMES
from ridgeline.storage import node_layout
from ridgeline.storage.download import DownloadStats, select_files
from ridgeline_serving.node_cache import inventory
from ridgeline_serving.node_cache.decide import (
    Need,
    Version,
    expired,
    needed_checkpoints,
    plan_eviction,
)
from ridgeline_serving.node_cache.fill import Download, Fill
from ridgeline_serving.node_cache.kube import Cluster
from ridgeline_serving.node_cache.listing import ListingError, list_checkpoint
from ridgeline_serving.node_cache.metrics import Metrics
from ridgeline_serving.node_cache.report import (
    Entry,
    build_report,
    fill_rate,
    report_text,
    same_report,
)
from ridgeline_serving.node_cache.settings import Settings

log = logging.getLogger("ridgeline.node_cache")

# How often a fill samples its progress and may rewrite the report.
REPORT_EVERY_S = 5.0
Complete, Filling, Waiting, Failed = (
    CheckpointState.COMPLETE,
    CheckpointState.FILLING,
    CheckpointState.WAITING,
    CheckpointState.FAILED,
)


class Agent:
    def __init__(
        self,
        settings: Settings,
        cluster: Cluster,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        schemes: tuple[str, ...] = SCHEMES,
    ) -> None:
        self.settings = settings
        self.schemes = schemes  # the URI schemes it fills (tests add file:// stores)
        self.root = settings.root
        self.cluster = cluster
        self.metrics = metrics or Metrics(settings.node)
        self.clock = clock
        self.needs: dict[str, Need] = {}
        self.entries: dict[str, Entry] = {}
        self.stopping = threading.Event()
        self.filling: Download | None = None
        self._published: NodeCacheReport | None = None
        self._published_at = float("-inf")
        self._verified: set[tuple[str, str]] = set()  # sha256-checked since this start

    def run(self) -> None:
        """Passes every resync period until ``stopping`` is set."""
        while not self.stopping.is_set():
            try:
                self.run_pass()
            except Exception:
                log.exception("node cache pass failed; next in %.0f s", self.settings.resync_s)
            self.stopping.wait(self.settings.resync_s)

    def run_pass(self) -> None:
        models = self.cluster.list_models()
        labels = self.cluster.node_labels(self.settings.node)
        self.needs = needed_checkpoints(models, labels, self.schemes)
        self.entries = {d: e for d, e in self.entries.items() if d in self.needs}
        checked = [f for f in map(self._check, self.needs.values()) if f is not None]
        fills = sorted(checked, key=self._fill_order)
        keep = self._keep(fills)
        for fill in fills:
            if self.stopping.is_set():
                return
            self._fill(fill, keep)
            self._publish()
        self._collect(keep)
        self._publish(force=True)

    def _fill_order(self, fill: Fill) -> tuple[bool, int, str]:
        """A pass's fills, one at a time, in the order that serves cold starts soonest:
        checkpoints with no version to load before new versions of ones that have one, the
        fewest bytes still missing first (a 2 GB model applied with a 140 GB one is on the node
        in seconds, not after the big one; a fill already running is not interrupted)."""
        entry = self.entries[fill.need.directory]
        return (entry.current_digest is not None, fill.total - entry.bytes, fill.need.directory)

    def _check(self, need: Need) -> Fill | None:
        """Verify ``current``, list the store; a Fill when the newest version is missing."""
        checkpoint = self.root / need.directory
        current = node_layout.read_current(checkpoint)
        if current is not None:
            version = node_layout.version_dir(checkpoint, current.digest)
            deep = (need.directory, current.digest) not in self._verified
            problems = node_layout.check_files(version, hashes=deep)
            if problems:
                # current goes first, so no replica starts on it, then the damaged files, and
                # the fill below fetches them again. Done even while a replica holds the
                # version (the one exception to .inuse): one that already loaded keeps its
                # open files; one still loading fails and its restart downloads meanwhile.
                log.warning("%s: %s fails verification: %s", need.uri, version, problems)
                node_layout.clear_current(checkpoint)
                node_layout.discard(version, problems)
                self.metrics.evicted("corrupt")
                current = None
            else:
                self._verified.add((need.directory, current.digest))
                inventory.touch(checkpoint, current.digest, self.clock())
        current_digest = current.digest if current else None
        try:
            listing = list_checkpoint(need, self.cluster)
        except ListingError as exc:
            message = f"the store could not be listed: {exc}"
            log.warning("%s: %s", need.uri, message)
            if current is not None:  # what the node holds still serves
                entry = Entry(Complete, current.digest, current.digest, current.bytes)
                entry.total_bytes, entry.message = current.bytes, message
            else:
                entry = Entry(Failed, None, None, 0, need.bytes, message=message)
            self.entries[need.directory] = entry
            return None
        manifest_key = listing.model.manifest_key
        files = select_files(listing.objects, manifest_key)
        digest = node_layout.checkpoint_digest(files)
        total = sum(f.size_bytes for f in files)
        if not files:
            message = f"{need.uri}: no model files to download"
            self.entries[need.directory] = Entry(Failed, None, current_digest, message=message)
            return None
        if current is not None and current.digest == digest:
            previous = self.entries.get(need.directory)
            if previous is None or previous.current_digest != digest:
                self.metrics.hit(need.directory)
            self.entries[need.directory] = Entry(Complete, digest, digest, total, total)
            return None
        version = node_layout.version_dir(checkpoint, digest)
        present = min(total, node_layout.present_bytes(version))
        self.entries[need.directory] = Entry(Waiting, digest, current_digest, present, total)
        return Fill(need, listing.store, listing.objects, manifest_key, digest, total, files)

    def _keep(self, fills: list[Fill]) -> set[tuple[str, str]]:
        """What no eviction or grace period may take: each needed checkpoint's current and
        target version (all of its versions while its target is unknown)."""
        keep = set()
        for directory, entry in self.entries.items():
            for digest in (entry.digest, entry.current_digest):
                if digest:
                    keep.add((directory, digest))
            if entry.digest is None:
                checkpoint = self.root / directory
                keep |= {(directory, d) for d in node_layout.digests(checkpoint)}
        return keep | {(f.need.directory, f.digest) for f in fills}

    def _fill(self, fill: Fill, keep: set[tuple[str, str]]) -> None:
        directory, budget = fill.need.directory, self.settings.budget_bytes
        entry = self.entries[directory]
        checkpoint = self.root / directory
        version = node_layout.version_dir(checkpoint, fill.digest)
        linked = node_layout.seed_version(checkpoint, fill.digest, fill.files, fill.need.uri)
        if linked:
            log.info(
                "%s: %d unchanged files linked from an older version", fill.need.uri, len(linked)
            )
        entry.bytes = min(fill.total, node_layout.present_bytes(version))
        eviction = plan_eviction(
            inventory.scan(self.root), keep, max(0, fill.total - entry.bytes), budget
        )
        if not eviction.enough:
            entry.state = Waiting
            entry.message = (
                f"the node cache's size budget ({budget} bytes) has no room: {eviction.used} "
                f"bytes used, {eviction.needed} more needed, and no other checkpoint on this "
                "node may be evicted (needed by a model or in use)"
            )
            log.warning("%s: %s", fill.need.uri, entry.message)
            return
        for victim in eviction.evict:
            self._remove(victim, "budget")
        entry.state, entry.message = Filling, ""
        self.metrics.miss(directory)
        version.mkdir(parents=True, exist_ok=True)
        inventory.touch(checkpoint, fill.digest, self.clock())
        log.info("%s: filling %s (%d bytes)", fill.need.uri, version, fill.total)
        stats = self._download(fill, entry, version)
        if stats is None:
            return
        problems = node_layout.check_files(version)
        if problems:
            node_layout.discard(version, problems)
            entry.state = Failed
            entry.message = f"the filled version fails verification: {list(problems.values())}"
            return
        node_layout.write_current(
            checkpoint, node_layout.Current(fill.digest, fill.need.uri, fill.total, len(fill.files))
        )
        self._verified.add((directory, fill.digest))
        entry.state, entry.current_digest = Complete, fill.digest
        entry.bytes, entry.bytes_per_second = fill.total, 0.0
        log.info(
            "%s: %s complete (%d bytes downloaded)",
            fill.need.uri,
            fill.digest,
            stats.bytes_downloaded,
        )

    def _download(self, fill: Fill, entry: Entry, version: Path) -> DownloadStats | None:
        """Download, sampling progress into the report; None when it failed or we stop."""
        self.filling = Download(fill, version, self.settings.parallel)
        counted, sampled, at = 0, entry.bytes, self.clock()
        while not self.filling.wait(REPORT_EVERY_S):
            if self.stopping.is_set():
                return None  # the downloader resumes from its recorded parts next start
            now_bytes, now = min(fill.total, node_layout.present_bytes(version)), self.clock()
            entry.bytes, entry.bytes_per_second = now_bytes, fill_rate(sampled, at, now_bytes, now)
            counted += max(0, now_bytes - sampled)
            self.metrics.downloaded(fill.need.directory, max(0, now_bytes - sampled))
            sampled, at = now_bytes, now
            self._publish()
        download, self.filling = self.filling, None
        if download.error is not None or download.stats is None:
            entry.state, entry.message = Failed, str(download.error)
            entry.bytes_per_second = 0.0
            log.warning("%s: fill failed: %s", fill.need.uri, download.error)
            return None
        self.metrics.downloaded(fill.need.directory, download.stats.bytes_downloaded - counted)
        return download.stats

    def _collect(self, keep: set[tuple[str, str]]) -> None:
        """Delete what the grace period frees; keep versions replicas hold marked as used."""
        versions = inventory.scan(self.root)
        for v in versions:
            if v.in_use:
                inventory.touch(self.root / v.directory, v.digest, self.clock())
        for v in expired(versions, keep, self.clock(), self.settings.grace_s):
            self._remove(v, "unused" if v.directory not in self.needs else "stale_version")

    def _remove(self, version: Version, reason: str) -> None:
        checkpoint = self.root / version.directory
        if node_layout.remove_version(checkpoint, version.digest):
            self.metrics.evicted(reason)
            log.info("removed %s/%s (%s)", version.directory, version.digest, reason)
        # Its last version gone and no model needing it: the directory goes too. An empty one
        # the agent did not fill (the kubelet makes the PersistentVolume's path) is left: a
        # pod may have it mounted.
        if version.directory not in self.needs and not node_layout.digests(checkpoint):
            node_layout.remove_checkpoint(checkpoint)

    def _publish(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._published_at < REPORT_EVERY_S:
            return
        used = sum(v.bytes for v in inventory.scan(self.root))
        budget = self.settings.budget_bytes
        report = build_report(self.settings.node, now, budget, used, self.needs, self.entries)
        self.metrics.usage(used, budget)
        self.metrics.checkpoints(
            self.needs, {d: (e.bytes, e.total_bytes) for d, e in self.entries.items()}
        )
        if same_report(self._published, report):
            return
        node = self.settings.node
        try:
            self.cluster.write_report(
                self.settings.namespace, report_name(node), report_labels(node), report_text(report)
            )
        except Exception:
            log.exception("could not write the node cache report; retried next pass")
            return
        self._published, self._published_at = report, now
