"""One object's download: its ranged parts, the partial file they are written into, the record
of parts written (so an interrupted download resumes), and the check before it is renamed into
place."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from ridgeline.storage import tree
from ridgeline.storage.base import ObjectInfo, ObjectStore, StorageError
from ridgeline.storage.cache_state import atomic_write_text
from ridgeline.storage.diskspace import write_all
from ridgeline.storage.progress import Progress


class IntegrityError(StorageError):
    """Downloaded bytes do not match the expected digest."""


def parts(size: int, part_bytes: int) -> list[tuple[int, int]]:
    return [(start, min(part_bytes, size - start)) for start in range(0, size, part_bytes)] or [
        (0, 0)
    ]


class FileJob:
    """One object: its parts, the partial file, the record of parts already written."""

    def __init__(self, info: ObjectInfo, dest: Path, part_bytes: int) -> None:
        # dest comes from cache_state.target_path: proven to lie inside the model's directory.
        self.info = info
        self.dest = dest
        self.partial = dest.with_name(dest.name + ".partial")
        self.state = dest.with_name(dest.name + ".partial.json")
        self.part_bytes = part_bytes
        self.parts = parts(info.size_bytes, part_bytes)
        self._lock = threading.Lock()
        done: set[int] = set()
        if self.partial.exists() and self.state.exists():
            try:
                saved = json.loads(self.state.read_text())
                if saved.get("version") == info.version and saved.get("part_bytes") == part_bytes:
                    done = set(saved.get("done", []))
            except (OSError, ValueError):
                done = set()
        else:
            self.partial.unlink(missing_ok=True)
        self.done = done
        tree.make_dirs(self.dest.parent)
        fd = os.open(self.partial, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, info.size_bytes)
        finally:
            os.close(fd)
        self._save()

    def _save(self) -> None:
        # Atomic: a torn record (a full disk mid-write) would read as "nothing done", which is
        # safe, but a rename keeps the parts already recorded.
        atomic_write_text(
            self.state,
            json.dumps(
                {
                    "version": self.info.version,
                    "part_bytes": self.part_bytes,
                    "done": sorted(self.done),
                }
            ),
        )

    def pending(self) -> list[int]:
        return [i for i in range(len(self.parts)) if i not in self.done]

    def pending_bytes(self) -> int:
        return sum(self.parts[i][1] for i in self.pending())

    def write_part(self, store: ObjectStore, index: int, progress: Progress) -> None:
        """Stream one part to its offset; it is recorded as done only once every byte is
        written and on disk (the record is what a resumed download trusts)."""
        start, length = self.parts[index]
        version = self.info.version or None
        written = 0
        fd = os.open(self.partial, os.O_WRONLY)
        try:
            if length:
                for chunk in store.iter_range(self.info.key, start, length, version):
                    write_all(fd, chunk, start + written)
                    written += len(chunk)
                    progress.add(len(chunk))
            if written == length:
                os.fdatasync(fd)  # some filesystems report a full disk only here
        except OSError as exc:
            # pwrite and fdatasync do not name the file; the error should.
            raise OSError(exc.errno, exc.strerror, str(self.partial)) from exc
        finally:
            os.close(fd)
        if written != length:
            raise StorageError(
                f"{store.root_uri}/{self.info.key}: short read at byte {start}: got {written} "
                f"of {length} bytes"
            )
        with self._lock:
            self.done.add(index)
            self._save()

    def finish(self, store: ObjectStore, expected_sha256: str | None) -> None:
        verify(store, self.info, self.partial, expected_sha256)
        self.state.unlink(missing_ok=True)
        os.replace(self.partial, self.dest)


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(8 * 2**20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(store: ObjectStore, info: ObjectInfo, path: Path, expected_sha256: str | None) -> None:
    where = f"{store.root_uri}/{info.key}"
    size = path.stat().st_size
    if size != info.size_bytes:
        path.unlink(missing_ok=True)
        raise IntegrityError(f"{where}: size {size} != {info.size_bytes} bytes")
    checks: list[tuple[str, str]] = []
    if expected_sha256:
        checks.append(("sha256", expected_sha256))
    elif info.version.startswith("sha256:"):
        checks.append(("sha256", info.version.removeprefix("sha256:")))
    for algorithm, expected in checks:
        actual = _digest(path, algorithm)
        if actual != expected.lower():
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".json").unlink(missing_ok=True)
            raise IntegrityError(
                f"{where}: {algorithm} mismatch: expected {expected}, got {actual}; the partial "
                "file was removed"
            )
