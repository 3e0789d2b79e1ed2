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


def _file_bytes(version: Path) -> dict[tuple[int, int], int]:
    """Bytes of each file (by inode) of a version: its size once complete, else the bytes
    written so far (partial files are created at full size, sparse)."""
    complete = cache_state.complete_files(version) is not None
    out = {}
    for _key, entry in tree.entries(version):
        if entry.is_file(follow_symlinks=False):
            st = entry.stat(follow_symlinks=False)
            size = st.st_size if complete else min(st.st_size, st.st_blocks * 512)
            out[(st.st_dev, st.st_ino)] = size
    return out


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
    """Every version under ``root``. A file hard-linked into several versions (``seed_version``)
    counts once, for the most recently used of them: evicting the others frees none of it."""
    found = []
    for checkpoint in checkpoint_dirs(root):
        for digest in node_layout.digests(checkpoint):
            found.append(
                (
                    checkpoint.name,
                    digest,
                    _last_used(checkpoint, digest),
                    node_layout.in_use(checkpoint, digest),
                    _file_bytes(checkpoint / digest),
                )
            )
    owner = {}
    for i in sorted(range(len(found)), key=lambda i: found[i][2]):
        owner.update(dict.fromkeys(found[i][4], i))
    return [
        Version(
            directory=directory,
            digest=digest,
            bytes=sum(n for inode, n in files.items() if owner[inode] == i),
            last_used=last_used,
            in_use=held,
        )
        for i, (directory, digest, last_used, held, files) in enumerate(found)
    ]


def touch(checkpoint: Path, digest: str, now: float) -> None:
    """Mark a version used at ``now`` (creating its ``.inuse``)."""
    os.utime(node_layout.ensure_inuse(checkpoint, digest), (now, now))
