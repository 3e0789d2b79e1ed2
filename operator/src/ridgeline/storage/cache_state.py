"""What a model's cache directory holds and how far it got: where each object key may land, the
record of versions on disk, the completion marker, and removal of files no longer listed.

Every model on a node shares one cache root, so an object key is a path only after it is proven
to stay inside its model's directory: S3 (unlike MinIO) stores keys such as ``m/w/../../x`` or
``m//tmp/x``, and written as they are they would land outside the cache or on another model's
weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

from ridgeline.storage.base import ObjectInfo, StorageError

COMPLETE = ".ridgeline-complete.json"
VERSIONS = ".ridgeline-versions.json"
# The downloader's own files beside each object (see download._FileJob).
PARTIAL_SUFFIXES = (".partial", ".partial.json")


class UnsafeKeyError(StorageError):
    """An object key that would be written outside its model's cache directory."""


def target_path(dest: Path, key: str, root_uri: str) -> Path:
    """Where ``key`` is cached under ``dest``; refuses keys that are not plain relative paths
    (absolute, empty or ``.``/``..`` segments, backslashes, NUL) or that would collide with the
    downloader's bookkeeping files."""
    parts = key.split("/")
    bad = (
        not key
        or "\\" in key
        or "\x00" in key
        or any(p in ("", ".", "..") for p in parts)
        or key in (COMPLETE, VERSIONS)
        or key.endswith(PARTIAL_SUFFIXES)
    )
    # The resolve() check is the backstop: it also catches a symlinked directory in the cache.
    if bad or not dest.joinpath(*parts).resolve().is_relative_to(dest.resolve()):
        raise UnsafeKeyError(
            f"{root_uri}: refusing object key {key!r}: it does not name a file inside the "
            "model's cache directory (empty, '.' or '..' path segments, or a name the cache uses)"
        )
    return dest.joinpath(*parts)


def target_paths(dest: Path, listing: list[ObjectInfo], root_uri: str) -> dict[str, Path]:
    """``target_path`` for a whole listing, checked before anything is written; also refuses a
    key that is another key's directory (``a`` and ``a/b`` cannot both be files)."""
    paths = {info.key: target_path(dest, info.key, root_uri) for info in listing}
    dirs = {"/".join(key.split("/")[:i]) for key in paths for i in range(1, key.count("/") + 1)}
    clash = sorted(dirs & set(paths))
    if clash:
        raise UnsafeKeyError(
            f"{root_uri}: refusing object key {clash[0]!r}: other keys use it as a directory"
        )
    return paths


def atomic_write_text(path: Path, text: str) -> None:
    """Write, flush to disk, then rename over ``path``: a reader sees the old file or the new
    one, never a torn one (a crash or a full disk mid-write leaves the old file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_json_dict(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def complete_versions(dest: Path) -> dict[str, str] | None:
    """The versions the completion marker vouches for; None when the marker is missing or
    unreadable (empty, truncated, not JSON): that cache is incomplete and is re-checked."""
    marker = _read_json_dict(dest / COMPLETE)
    versions = marker.get("versions") if marker else None
    if not isinstance(versions, dict):
        return None
    return {str(k): str(v) for k, v in versions.items()}


def mark_complete(dest: Path, root_uri: str, versions: dict[str, str]) -> None:
    atomic_write_text(
        dest / COMPLETE, json.dumps({"uri": root_uri, "versions": versions}, indent=1)
    )


def mark_incomplete(dest: Path) -> None:
    (dest / COMPLETE).unlink(missing_ok=True)


def recorded(dest: Path, info: ObjectInfo) -> bool:
    """Whether the file on disk for ``info.key`` was written from ``info.version``."""
    data = _read_json_dict(dest / VERSIONS)
    return data is not None and data.get(info.key) == info.version


def record(dest: Path, infos: list[ObjectInfo]) -> None:
    """Remember which version each key's file holds; keys no longer listed are dropped."""
    data = _read_json_dict(dest / VERSIONS) or {}
    data.update({i.key: i.version for i in infos})
    atomic_write_text(dest / VERSIONS, json.dumps(data))


def keep_only(dest: Path, listing: list[ObjectInfo]) -> list[str]:
    """Remove every file under ``dest`` that the current listing does not name (an old single
    file beside new shards would otherwise be loaded), with its recorded version and any
    leftover partial download; returns the removed keys. Empty directories go too."""
    keep = {i.key for i in listing}
    removed = []
    for dirpath, _dirs, files in os.walk(dest, topdown=False):
        for name in files:
            path = Path(dirpath, name)
            key = PurePosixPath(path.relative_to(dest)).as_posix()
            if key in keep or key in (COMPLETE, VERSIONS):
                continue
            path.unlink(missing_ok=True)
            removed.append(key)
        if Path(dirpath) != dest and not os.listdir(dirpath):
            os.rmdir(dirpath)
    data = _read_json_dict(dest / VERSIONS)
    if data is not None and set(data) - keep:
        atomic_write_text(dest / VERSIONS, json.dumps({k: v for k, v in data.items() if k in keep}))
    return sorted(removed)
