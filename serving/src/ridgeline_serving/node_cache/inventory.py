"""What the node root holds, read from disk for the pure decisions: every version of every
checkpoint with its bytes, when it was last used and whether a replica holds it.

"Last used" is the mtime of ``<digest>.inuse``: the agent touches it each pass while a model
needs the version or a replica holds it, so the least recently used order and the grace
period survive the agent's restarts without a state file of their own.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from ridgeline.storage import cache_state, node_layout, tree
from ridgeline_serving.node_cache.decide import Version

# download.cache_key's names: the agent never touches anything else under the root.
CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9._-]*-[0-9a-f]{12}")


def version_bytes(version: Path) -> int:
    """A complete version's recorded sizes; else the bytes written so far."""
    files = cache_state.complete_files(version)
    if files is not None:
        return sum(int(str(f.get("size", 0))) for f in files.values())
    return node_layout.present_bytes(version)


def checkpoint_dirs(root: Path) -> list[Path]:
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    return [root / n for n in names if CHECKPOINT_NAME.fullmatch(n) and tree.is_real_dir(root / n)]


def _last_used(checkpoint: Path, digest: str) -> float:
    for path in (node_layout.inuse_path(checkpoint, digest), checkpoint / digest):
        with contextlib.suppress(OSError):
            return path.stat().st_mtime
    return 0.0


def scan(root: Path) -> list[Version]:
    out = []
    for checkpoint in checkpoint_dirs(root):
        for digest in node_layout.digests(checkpoint):
            out.append(
                Version(
                    directory=checkpoint.name,
                    digest=digest,
                    bytes=version_bytes(checkpoint / digest),
                    last_used=_last_used(checkpoint, digest),
                    in_use=node_layout.in_use(checkpoint, digest),
                )
            )
    return out


def touch(checkpoint: Path, digest: str, now: float) -> None:
    """Mark a version used at ``now`` (creating its ``.inuse``)."""
    os.utime(node_layout.ensure_inuse(checkpoint, digest), (now, now))
