"""Copy a model root into a node-local cache: files in parallel, large files in ranged parts,
one download per node (a file lock), written under a temporary name and renamed when complete
and verified. An interrupted download resumes from the parts already written.

Integrity: the sha256 of a manifest (``sha256sum`` format, ``spec.model.sha256Manifest``) or
the store's own sha256 (Hugging Face LFS) where there is one; always the size; and every ranged
read of an S3 object is conditional on the ETag seen at listing (If-Match), so bytes of two
versions are never mixed. The MD5 of a single-part ETag is not recomputed: that pass alone ran
at 0.6 GB/s on this machine (docs/benchmarks.md), a cap on every download. A mismatch removes
the partial file and raises, naming the URI and both digests.

What the directory may hold (keys proven to stay inside it, exactly the current listing, an
atomically written completion marker) is ``cache_state``'s job; one object's parts are
``file_job``'s; progress is ``progress``'s. The disk: a download that cannot fit fails before
it starts, every write is complete or raises, and a full disk fails the download naming the
disk and the bytes needed (``diskspace``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ridgeline.storage import cache_state
from ridgeline.storage.base import ObjectInfo, ObjectStore, StorageError
from ridgeline.storage.cache_state import COMPLETE
from ridgeline.storage.diskspace import check_space, disk_full, is_disk_full
from ridgeline.storage.file_job import FileJob, IntegrityError
from ridgeline.storage.progress import Progress

__all__ = [
    "DownloadStats",
    "IntegrityError",
    "cache_key",
    "download_into",
    "download_model",
    "parse_manifest",
]

log = logging.getLogger("ridgeline.download")

PART_BYTES = 32 * 2**20
PARALLEL = 8
# Weights in other formats beside safetensors are skipped: transformers loads safetensors.
SKIP_WHEN_SAFETENSORS = re.compile(r"(\.bin|\.pt|\.pth|\.gguf|\.msgpack|\.h5|\.ckpt)$|^original/")


@dataclass(frozen=True)
class DownloadStats:
    path: Path
    files: int
    bytes_total: int
    bytes_downloaded: int
    seconds: float
    reused: bool

    @property
    def gb_per_s(self) -> float:
        return self.bytes_downloaded / 1e9 / self.seconds if self.seconds > 0 else 0.0


def cache_key(root_uri: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", root_uri.split("://", 1)[-1])[-60:]
    return f"{readable}-{hashlib.sha256(root_uri.encode()).hexdigest()[:12]}"


def parse_manifest(text: str) -> dict[str, str]:
    """``<sha256>  <path>`` lines, as sha256sum writes them."""
    out = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([0-9a-fA-F]{64})\s+\*?(.+)", line.strip())
        if not match:
            raise StorageError(f"manifest line {n} is not '<sha256>  <path>': {line!r}")
        out[match.group(2).strip()] = match.group(1).lower()
    return out


def select_files(objects: list[ObjectInfo], manifest_key: str | None) -> list[ObjectInfo]:
    has_safetensors = any(o.key.endswith(".safetensors") for o in objects)
    chosen = []
    for obj in objects:
        if obj.key == manifest_key or obj.key.startswith(".") or obj.key == COMPLETE:
            continue
        if has_safetensors and SKIP_WHEN_SAFETENSORS.search(obj.key):
            continue
        chosen.append(obj)
    return chosen


@contextlib.contextmanager
def _node_lock(path: Path) -> Iterator[None]:
    """One download per node: other replicas on the node wait here, then reuse the cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def download_model(
    store: ObjectStore,
    cache_root: Path,
    manifest_key: str | None = None,
    parallel: int = PARALLEL,
    part_bytes: int = PART_BYTES,
    progress: bool | None = None,
) -> DownloadStats:
    """Download (or reuse) the model under ``cache_root``; returns where and how fast.

    ``progress``: None shows it (a redrawn line on a terminal, log lines otherwise), False
    keeps quiet. The directory ends up holding exactly the current listing: files no longer
    listed are removed before the cache is marked complete."""
    dest = cache_root / cache_key(store.root_uri)
    lock = cache_root / f"{dest.name}.lock"
    with _disk_errors(store, cache_root):
        return _download(store, dest, lock, None, manifest_key, parallel, part_bytes, progress)


def download_into(
    store: ObjectStore,
    dest: Path,
    *,
    objects: list[ObjectInfo] | None = None,
    manifest_key: str | None = None,
    parallel: int = PARALLEL,
    part_bytes: int = PART_BYTES,
    progress: bool | None = None,
    lock: Path | None = None,
) -> DownloadStats:
    """``download_model`` into ``dest`` itself (the node cache's version directories).

    ``objects``: the store's listing to download (default: list it now); a caller that named
    ``dest`` after a listing passes it, and the ETag-conditional reads fail rather than fill
    ``dest`` with other versions. ``lock``: the file that serialises downloads into ``dest``
    (default ``<dest>.lock`` beside it)."""
    lock = lock or dest.with_name(f"{dest.name}.lock")
    with _disk_errors(store, dest):
        return _download(store, dest, lock, objects, manifest_key, parallel, part_bytes, progress)


@contextlib.contextmanager
def _disk_errors(store: ObjectStore, shown: Path) -> Iterator[None]:
    """The download's disk errors as StorageError, named with ``shown`` (the directory the
    caller gave)."""
    try:
        yield
    except OSError as exc:  # the cache's disk, not the store: full, read-only, no permission
        if is_disk_full(exc):
            raise disk_full(store.root_uri, shown, None, exc) from exc
        where = exc.filename or shown
        raise StorageError(
            f"{store.root_uri}: cannot write the weight cache ({where}: {exc.strerror or exc})"
        ) from exc


def _download(
    store: ObjectStore,
    dest: Path,
    lock: Path,
    objects: list[ObjectInfo] | None,
    manifest_key: str | None,
    parallel: int,
    part_bytes: int,
    progress: bool | None,
) -> DownloadStats:
    started = time.monotonic()
    with _node_lock(lock):
        objects = store.list() if objects is None else objects
        manifest = (
            parse_manifest(store.read(manifest_key).decode(errors="replace"))
            if manifest_key
            else {}
        )
        files = select_files(objects, manifest_key)
        if not files:
            raise StorageError(f"{store.root_uri}: no model files to download")
        targets = cache_state.target_paths(dest, files, store.root_uri)
        if manifest:
            missing = sorted(set(manifest) - {f.key for f in files})
            if missing:
                raise StorageError(f"{store.root_uri}: manifest lists missing files: {missing}")
        versions = {f.key: f.version for f in files}
        total = sum(f.size_bytes for f in files)
        if cache_state.complete_versions(dest) == versions:
            return DownloadStats(dest, len(files), total, 0, time.monotonic() - started, True)
        cache_state.mark_incomplete(dest)
        # A file where the new listing needs a directory, or the reverse (a model update that
        # moved files), is removed first: writing through it fails with "Not a directory".
        cleared = cache_state.clear_way(dest, targets.values())
        if cleared:
            log.info("%s: removed what the new layout replaces: %s", store.root_uri, cleared)
        jobs = []
        for info in files:
            target = targets[info.key]
            if (
                target.is_file()
                and target.stat().st_size == info.size_bytes
                and cache_state.recorded(dest, info)
            ):
                continue
            jobs.append(FileJob(info, target, part_bytes))
        todo = sum(job.pending_bytes() for job in jobs)
        check_space(store.root_uri, dest, todo)
        _fetch(store, jobs, todo, parallel, progress, dest)
        for job in jobs:
            job.finish(store, manifest.get(job.info.key))
            cache_state.record(dest, [job.info])
        removed = cache_state.keep_only(dest, files)
        if removed:
            log.info("%s: removed files no longer listed: %s", store.root_uri, removed)
        # The renames above reach the disk before the marker that vouches for them.
        cache_state.sync_dirs({dest} | {job.dest.parent for job in jobs})
        cache_state.mark_complete(dest, store.root_uri, versions, manifest)
    seconds = time.monotonic() - started
    stats = DownloadStats(dest, len(files), total, todo, seconds, False)
    log.info(
        "weights from %s: %d files, %.2f GB in %.1f s (%.2f GB/s)",
        store.root_uri,
        len(files),
        todo / 1e9,
        seconds,
        stats.gb_per_s,
    )
    return stats


def _fetch(
    store: ObjectStore,
    jobs: list[FileJob],
    todo: int,
    parallel: int,
    progress: bool | None,
    dest: Path,
) -> None:
    """Write every pending part; the first failure cancels the parts not yet started."""
    bar = Progress.auto(f"weights {store.root_uri}", todo, progress)
    tasks = [(job, i) for job in jobs for i in job.pending()]
    try:
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            futures = [pool.submit(job.write_part, store, i, bar) for job, i in tasks]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    except OSError as exc:
        if is_disk_full(exc):
            # What is still missing: the bytes of every part not yet recorded as written.
            needed = sum(j.pending_bytes() for j in jobs)
            raise disk_full(store.root_uri, dest, needed, exc) from exc
        raise
    finally:
        bar.close()
