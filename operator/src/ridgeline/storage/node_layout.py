"""The node weight cache on disk (issue 24), shared by the agent that fills it and the replicas
that read it through a read-only PersistentVolume.

    <root>/<cache_key(uri)>/            one checkpoint: what one PersistentVolume exposes
        current                         {"digest", "uri", "bytes", "files"}: what replicas load
        <digest>/                       one version, filled by the downloader (download_into)
        <digest>.inuse                  empty; replicas hold flock(LOCK_SH) on it while they run
        <digest>.lock                   the downloader's lock while it fills <digest>/

``digest`` names a version by the store's listing (key, ETag, size of the files the downloader
keeps), so a new object version fills a new directory while the old one serves. ``current`` is
written only after its version is complete and verified. The completion marker records each
file's size and mtime_ns (and sha256 where the manifest gave one): a replica checks a version
with stats alone, without the store. The agent creates ``.inuse`` (the replica's mount is
read-only) and never deletes a version whose ``.inuse`` it cannot lock exclusively.

A replica: ``read_current``, then ``hold_in_use`` (keep it open for its life), then
``verify_version`` (after the lock: a version removed meanwhile fails it), then load.

Over 300 lines: the agent's writes and the replicas' reads of this layout stay side by side,
so a change to the layout cannot update one side alone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from ridgeline.storage import cache_state, tree
from ridgeline.storage.base import ObjectInfo
from ridgeline.storage.cache_state import COMPLETE, PARTIAL_SUFFIXES, VERSIONS

CURRENT = "current"
INUSE_SUFFIX = ".inuse"
LOCK_SUFFIX = ".lock"
DIGEST = re.compile(r"[0-9a-f]{16}")
# Written by the agent (root in its pod), read by replicas running as uid 1000.
FILE_MODE = 0o644


@dataclass(frozen=True)
class Current:
    """What ``current`` names: the version replicas load."""

    digest: str
    uri: str
    bytes: int
    files: int


def checkpoint_digest(files: Iterable[ObjectInfo]) -> str:
    """The version of a checkpoint: 16 hex characters of sha256 over the sorted (key, version,
    size) of the files the downloader keeps (``download.select_files``)."""
    rows = sorted((f.key, f.version, f.size_bytes) for f in files)
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def version_dir(checkpoint_dir: Path, digest: str) -> Path:
    """``<checkpoint_dir>/<digest>``; ValueError for anything but a digest (``current`` is read
    from disk: it must not name a path outside the checkpoint)."""
    if not DIGEST.fullmatch(digest):
        raise ValueError(f"not a checkpoint digest: {digest!r}")
    return checkpoint_dir / digest


def digests(checkpoint_dir: Path) -> list[str]:
    """The versions present (complete or not), as their digests."""
    try:
        names = os.listdir(checkpoint_dir)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if DIGEST.fullmatch(n) and tree.is_real_dir(checkpoint_dir / n))


def read_current(checkpoint_dir: Path) -> Current | None:
    """``current``, or None when it is missing or unreadable (nothing to load)."""
    try:
        data = json.loads((checkpoint_dir / CURRENT).read_text())
        current = Current(
            digest=str(data["digest"]),
            uri=str(data["uri"]),
            bytes=int(data["bytes"]),
            files=int(data["files"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return current if DIGEST.fullmatch(current.digest) else None


def write_current(checkpoint_dir: Path, current: Current) -> None:
    """Point replicas at ``current.digest`` (atomically; the caller has verified it)."""
    version_dir(checkpoint_dir, current.digest)  # refuses a malformed digest
    cache_state.atomic_write_text(checkpoint_dir / CURRENT, json.dumps(asdict(current)))
    os.chmod(checkpoint_dir / CURRENT, FILE_MODE)


def clear_current(checkpoint_dir: Path) -> None:
    """Stop replicas loading this checkpoint (its version failed verification)."""
    (checkpoint_dir / CURRENT).unlink(missing_ok=True)


def check_files(version: Path, hashes: bool = False) -> dict[str, str]:
    """What is wrong with a version, by file key (``""`` for the version as a whole): a missing
    marker, a missing file, a wrong size, a changed mtime, a partial download left behind; with
    ``hashes``, also a sha256 that differs from the one recorded. Empty: it is intact."""
    files = cache_state.complete_files(version)
    if files is None:
        return {"": f"{version}: no completion marker (incomplete or being refilled)"}
    problems: dict[str, str] = {}
    for key, record in files.items():
        path = version / key
        try:
            st = path.lstat()
        except OSError:
            problems[key] = f"{key}: missing"
            continue
        if not path.is_file() or path.is_symlink():
            problems[key] = f"{key}: not a regular file"
        elif st.st_size != record.get("size"):
            problems[key] = f"{key}: {st.st_size} bytes, the marker records {record.get('size')}"
        elif st.st_mtime_ns != record.get("mtime_ns"):
            problems[key] = f"{key}: modified since it was written (mtime changed)"
        elif hashes and isinstance(record.get("sha256"), str) and _sha256(path) != record["sha256"]:
            problems[key] = f"{key}: sha256 differs from the manifest's"
    for key, entry in tree.entries(version):
        if entry.is_file(follow_symlinks=False) and key.endswith(PARTIAL_SUFFIXES):
            problems[key] = f"{key}: a partial download in a complete version"
    return problems


def verify_version(version: Path) -> list[str]:
    """Problems found by stats alone (cheap: a replica runs it before loading); empty: intact."""
    return list(check_files(version).values())


def verify_version_hashes(version: Path) -> list[str]:
    """``verify_version`` plus every recorded sha256 (reads every byte: the agent's deep check)."""
    return list(check_files(version, hashes=True).values())


def discard(version: Path, keys: Iterable[str]) -> None:
    """Remove the marker and the named damaged files, so the downloader fetches them again (it
    keeps a file whose size and recorded version match, and a same-size edit would pass).

    A damaged file hard-linked from another version (``seed_version``) is damaged there too,
    though that version's stats still match: it loses the file and its marker as well, or the
    refill would link the same bad inode back. Done even while a replica holds either version
    (see ``ridgeline_serving.weights``): its open files stay readable."""
    damaged = [k for k in keys if k and k not in (COMPLETE, VERSIONS)]
    for other in _sharing(version, damaged):
        cache_state.mark_incomplete(other)
    cache_state.mark_incomplete(version)
    for key in damaged:
        for other in _sharing(version, [key]):
            (other / key).unlink(missing_ok=True)
        tree.remove_tree(version / key)


def _sharing(version: Path, keys: list[str]) -> list[Path]:
    """The checkpoint's other versions that hold one of ``keys`` as the same inode."""
    found = []
    for digest in digests(version.parent):
        other = version.parent / digest
        if other != version and any(_same_file(version / k, other / k) for k in keys):
            found.append(other)
    return found


def _same_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = a.lstat(), b.lstat()
    except OSError:
        return False
    return stat.S_ISREG(sa.st_mode) and (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(8 * 2**20), b""):
            h.update(chunk)
    return h.hexdigest()


def seed_version(
    checkpoint_dir: Path, digest: str, files: list[ObjectInfo], root_uri: str
) -> list[str]:
    """Hard-link into ``<digest>/`` the files another intact version of the checkpoint holds at
    the same object version, and record them as the downloader does, so it fetches only what
    changed (a new config.json beside 141 GB of unchanged shards). Returns the keys linked."""
    dest = version_dir(checkpoint_dir, digest)
    targets = cache_state.target_paths(dest, files, root_uri)
    linked: dict[str, ObjectInfo] = {}
    for other in digests(checkpoint_dir):
        source = version_dir(checkpoint_dir, other)
        versions = cache_state.complete_versions(source)
        if other == digest or versions is None:
            continue
        damaged = check_files(source)
        for info in files:
            target = targets[info.key]
            if info.key in linked or info.key in damaged or versions.get(info.key) != info.version:
                continue
            if os.path.lexists(target):
                continue
            try:
                tree.make_dirs(target.parent)
                os.link(source / info.key, target)
            except OSError:
                continue  # a filesystem without links: the downloader fetches it
            linked[info.key] = info
    if linked:
        cache_state.record(dest, list(linked.values()))
    return sorted(linked)


def inuse_path(checkpoint_dir: Path, digest: str) -> Path:
    return version_dir(checkpoint_dir, digest).with_name(digest + INUSE_SUFFIX)


def ensure_inuse(checkpoint_dir: Path, digest: str) -> Path:
    """Create ``<digest>.inuse`` (mode 0644) if missing; the agent does, before ``current``
    names the digest, since a replica cannot create files on its read-only mount."""
    path = inuse_path(checkpoint_dir, digest)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    os.close(fd)
    return path


def hold_in_use(checkpoint_dir: Path, digest: str) -> IO[bytes]:
    """Open ``<digest>.inuse`` read-only and hold a shared lock on it; the lock lasts until the
    returned file is closed (or the process ends). FileNotFoundError when the agent has not
    created it. Blocks while the agent removes the version (it holds the exclusive lock)."""
    fh = inuse_path(checkpoint_dir, digest).open("rb")
    try:
        fcntl.flock(fh, fcntl.LOCK_SH)
    except BaseException:
        fh.close()
        raise
    return fh


@contextlib.contextmanager
def _exclusive(checkpoint_dir: Path, digest: str) -> Iterator[bool]:
    """Yield whether ``<digest>.inuse`` could be locked exclusively without waiting (True when
    there is no such file); the lock is held until the block ends."""
    try:
        fh = inuse_path(checkpoint_dir, digest).open("rb")
    except FileNotFoundError:
        yield True
        return
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            yield False
            return
        yield True


def in_use(checkpoint_dir: Path, digest: str) -> bool:
    """Whether a replica holds the version (its shared lock on ``<digest>.inuse``)."""
    with _exclusive(checkpoint_dir, digest) as free:
        return not free


def remove_version(checkpoint_dir: Path, digest: str) -> bool:
    """Delete a version with its ``.inuse`` and ``.lock`` unless a replica holds it; returns
    whether it was deleted. ``current`` is cleared first if it names the version."""
    with _exclusive(checkpoint_dir, digest) as free:
        if not free:
            return False
        current = read_current(checkpoint_dir)
        if current is not None and current.digest == digest:
            clear_current(checkpoint_dir)
        tree.remove_tree(version_dir(checkpoint_dir, digest))
        version_dir(checkpoint_dir, digest).with_name(digest + LOCK_SUFFIX).unlink(missing_ok=True)
        inuse_path(checkpoint_dir, digest).unlink(missing_ok=True)
    return True


def remove_checkpoint(checkpoint_dir: Path) -> bool:
    """Delete a whole checkpoint unless a replica holds one of its versions; returns whether
    it is gone."""
    held = {
        n.removesuffix(INUSE_SUFFIX)
        for n in (os.listdir(checkpoint_dir) if checkpoint_dir.is_dir() else [])
        if n.endswith(INUSE_SUFFIX) and DIGEST.fullmatch(n.removesuffix(INUSE_SUFFIX))
    }
    if any(in_use(checkpoint_dir, d) for d in held):
        return False
    for digest in sorted(set(digests(checkpoint_dir)) | held):
        if not remove_version(checkpoint_dir, digest):
            return False  # taken meanwhile: what is left stays
    tree.remove_tree(checkpoint_dir)
    return True


def present_bytes(path: Path) -> int:
    """Bytes written under ``path``: allocated blocks, at most each file's size (the
    downloader's partial files are created at full size, sparse, and fill as parts arrive)."""
    total = 0
    if not path.exists():
        return 0
    for _key, entry in tree.entries(path):
        if entry.is_file(follow_symlinks=False):
            st = entry.stat(follow_symlinks=False)
            total += min(st.st_size, st.st_blocks * 512)
    return total
