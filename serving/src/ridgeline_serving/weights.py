"""Where a replica's weights come from: the node weight cache when its node holds a complete,
verified copy of the checkpoint (read-only, filled by the node cache agent, nothing fetched
from the store), else a download into the pod's own cache directory, as before the node cache.

A version of the checkpoint is loaded from the node cache only after it passes its check
(every file the completion marker lists, at its size and modification time) and while the
replica holds it in use (a shared lock the agent respects: it never deletes a version a
running replica holds). A miss says why, in the log and in the replica's metrics."""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ridgeline.api.serving_args import ServingArgs
from ridgeline.storage import open_store
from ridgeline.storage.download import download_model
from ridgeline.storage.node_layout import hold_in_use, read_current, verify_version, version_dir

log = logging.getLogger("ridgeline.serving")
Source = Literal["node_cache", "download"]


@dataclass
class Weights:
    """The checkpoint a replica loads, and what getting it took."""

    path: Path
    source: Source
    seconds: float
    bytes_downloaded: int = 0
    bytes_from_cache: int = 0
    gb_per_s: float = 0.0
    miss_reason: str | None = None
    # Holds the node cache version in use for the replica's life (closed with the process).
    held: ExitStack = field(default_factory=ExitStack, repr=False)


def from_node_cache(checkpoint_dir: Path, model_uri: str) -> Weights | str:
    """The node cache's verified version of the checkpoint, held in use; or why not."""
    began = time.monotonic()
    if not checkpoint_dir.is_dir():
        return f"{checkpoint_dir} is not mounted"
    current = read_current(checkpoint_dir)
    if current is None:
        return (
            "this node holds no complete copy yet (a node that joined a moment ago, or the "
            "agent is still filling it)"
        )
    if current.uri != model_uri:
        return f"the node cache holds {current.uri}, not {model_uri}"
    held = ExitStack()
    try:
        held.enter_context(hold_in_use(checkpoint_dir, current.digest))
    except OSError as exc:
        held.close()
        return f"version {current.digest} cannot be held in use: {exc}"
    # Checked once held: the agent neither evicts nor deletes a version while it is held. The
    # one exception is a version its hash check finds damaged: its damaged files go even
    # while held. A replica that already loaded keeps its open files; one still loading
    # fails, Serve restarts it, and the restart downloads until the agent's refill is done.
    path = version_dir(checkpoint_dir, current.digest)
    problems = verify_version(path)
    if problems:
        held.close()
        return f"version {current.digest} fails its check: {'; '.join(problems[:3])}"
    return Weights(
        path,
        "node_cache",
        time.monotonic() - began,
        bytes_from_cache=current.bytes,
        held=held,
    )


def fetch_weights(args: ServingArgs) -> Weights:
    """The node cache's copy where it is complete and verified, else a download."""
    reason = None
    if args.node_cache_dir:
        found = from_node_cache(Path(args.node_cache_dir), args.model_uri)
        if isinstance(found, Weights):
            log.info(
                "weights from the node cache (hit): %s, %d bytes, 0 bytes from the store",
                found.path,
                found.bytes_from_cache,
            )
            return found
        reason = found
        log.warning(
            "node cache miss: %s; downloading %s into %s", reason, args.model_uri, args.cache_dir
        )
    stats = download_model(
        open_store(args.model_uri),
        Path(args.cache_dir).expanduser(),
        manifest_key=args.sha256_manifest,
        parallel=args.download_parallelism,
    )
    return Weights(
        stats.path,
        "download",
        stats.seconds,
        bytes_downloaded=stats.bytes_downloaded,
        gb_per_s=stats.gb_per_s,
        miss_reason=reason,
    )
