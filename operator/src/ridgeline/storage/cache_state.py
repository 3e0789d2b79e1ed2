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
from collections.abc import Iterable, Mapping
from pathlib import Path

from ridgeline.storage import tree
from ridgeline.storage.base import ObjectInfo, StorageError

COMPLETE = ".ridgeline-complete.json"
VERSIONS = ".ridgeline-versions.json"
# The downloader's own files beside each object (see file_job.FileJob).
PARTIAL_SUFFIXES = (".partial", ".partial.json")
# The longest name the downloader makes of a key's: ".<name>.partial.json.<pid>.tmp", the
# temporary file of an atomic write (pids go up to 4194304).
BOOKKEEPING_RESERVE = len("..partial.json.4194304.tmp")


class UnsafeKeyError(StorageError):
    """An object key that would be written outside its model's cache directory."""


def _fs_limit(dest: Path, name: str, default: int) -> int:
    path = Path(os.path.abspath(dest))
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return os.pathconf(path, name)
    except (OSError, ValueError):
        return default


def _check_length(dest: Path, key: str, parts: list[str], root_uri: str) -> None:
    """Refuse a key the filesystem cannot hold with its bookkeeping names: a name over
    NAME_MAX or a path over PATH_MAX fails deep inside the download otherwise."""
    name_max = _fs_limit(dest, "PC_NAME_MAX", 255)
    path_max = _fs_limit(dest, "PC_PATH_MAX", 4096)
    longest = max(len(os.fsencode(p)) for p in parts[:-1]) if len(parts) > 1 else 0
    last = len(os.fsencode(parts[-1])) + BOOKKEEPING_RESERVE
    total = len(os.fsencode(os.path.abspath(dest.joinpath(*parts)))) + BOOKKEEPING_RESERVE
    if longest > name_max or last > name_max or total >= path_max:
        shown = key if len(key) <= 80 else f"{key[:60]}...{key[-16:]}"
        raise UnsafeKeyError(
            f"{root_uri}: refusing object key {shown!r} ({len(key)} characters, {len(parts)} "
            f"levels): longer than the cache's filesystem allows (a name up to {name_max} "
            f"bytes, a path up to {path_max}, each less {BOOKKEEPING_RESERVE} for the "
            "downloader's own suffixes)"
        )


def target_path(dest: Path, key: str, root_uri: str) -> Path:
    """Where ``key`` is cached under ``dest``; refuses keys that are not plain relative paths
    (absolute, empty or ``.``/``..`` segments, backslashes, NUL), that would collide with the
    downloader's bookkeeping files, or that are longer than the filesystem allows."""
    parts = key.split("/")
    bad = (
        not key
        or "\\" in key
        or "\x00" in key
        or any(p in ("", ".", "..") for p in parts)
        or key in (COMPLETE, VERSIONS)
        or key.endswith(PARTIAL_SUFFIXES)
    )
    if not bad:
        _check_length(dest, key, parts, root_uri)
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


def mark_complete(
    dest: Path, root_uri: str, versions: dict[str, str], sha256: Mapping[str, str] | None = None
) -> None:
    """Vouch for ``dest``: the versions it holds, and each file's size and mtime_ns as written
    (with its sha256 where the manifest gives one), so a reader that cannot reach the store
    (a replica on the node cache) can check the files have not changed since."""
    files: dict[str, dict[str, object]] = {}
    for key in versions:
        st = os.stat(dest / key)
        entry: dict[str, object] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if sha256 and key in sha256:
            entry["sha256"] = sha256[key]
        files[key] = entry
    atomic_write_text(
        dest / COMPLETE,
        json.dumps({"uri": root_uri, "versions": versions, "files": files}, indent=1),
    )


def complete_files(dest: Path) -> dict[str, dict[str, object]] | None:
    """The per-file record of the completion marker (size, mtime_ns, sha256 where known);
    None when the marker is missing, unreadable or predates the record."""
    marker = _read_json_dict(dest / COMPLETE)
    files = marker.get("files") if marker else None
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        return None
    return {str(k): dict(v) for k, v in files.items()}


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


def clear_way(dest: Path, targets: Iterable[Path]) -> list[str]:
    """Remove what stands where the new listing puts a file: a file or link where one of its
    directories must go, a directory where the file (or its partial files) must go. Only
    under ``dest``, and links are removed, never followed. Returns what was removed."""
    removed = []
    for target in targets:
        rel = target.relative_to(dest).parts
        for depth in range(1, len(rel)):
            parent = dest.joinpath(*rel[:depth])
            if tree.is_real_dir(parent):
                continue
            if os.path.lexists(parent):
                parent.unlink()
                removed.append("/".join(rel[:depth]))
            break  # nothing exists below a missing or removed parent
        else:
            for path in (target, *(target.with_name(target.name + s) for s in PARTIAL_SUFFIXES)):
                if tree.is_other_than_file(path):
                    tree.remove_tree(path)
                    removed.append(path.relative_to(dest).as_posix())
    return removed


def sync_dirs(dirs: Iterable[Path]) -> None:
    """Flush directory entries (renames into them) to disk."""
    for directory in dirs:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def keep_only(dest: Path, listing: list[ObjectInfo]) -> list[str]:
    """Remove every file under ``dest`` that the current listing does not name (an old single
    file beside new shards would otherwise be loaded), with its recorded version and any
    leftover partial download; returns the removed keys. Empty directories go too."""
    keep = {i.key for i in listing}
    removed = []
    for key, entry in list(tree.entries(dest)):
        if entry.is_dir(follow_symlinks=False) or key in keep or key in (COMPLETE, VERSIONS):
            continue
        os.unlink(entry.path)
        removed.append(key)
    tree.remove_empty_dirs(dest)
    data = _read_json_dict(dest / VERSIONS)
    if data is not None and set(data) - keep:
        atomic_write_text(dest / VERSIONS, json.dumps({k: v for k, v in data.items() if k in keep}))
    return sorted(removed)
