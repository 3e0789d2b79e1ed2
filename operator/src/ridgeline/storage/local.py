"""``file://`` and plain paths: a local directory or a mounted volume."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ridgeline.storage.base import CHUNK_BYTES, ObjectInfo, StorageError


class LocalStore:
    def __init__(self, root: Path) -> None:
        self._root = root

    @property
    def root_uri(self) -> str:
        return self._root.as_uri()

    def _path(self, key: str) -> Path:
        path = (self._root / key).resolve()
        if self._root.resolve() not in path.parents and path != self._root.resolve():
            raise StorageError(f"{self.root_uri}: key {key!r} escapes the model root")
        return path

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise StorageError(f"{self.root_uri}/{key}: no such file") from None
        except OSError as exc:
            raise StorageError(f"{self.root_uri}/{key}: {exc.strerror}") from exc
        if not path.is_file():
            raise StorageError(f"{self.root_uri}/{key}: not a regular file")
        return ObjectInfo(key=key, size_bytes=st.st_size, version=f"{st.st_size}-{st.st_mtime_ns}")

    def list(self) -> list[ObjectInfo]:
        if not self._root.is_dir():
            raise StorageError(f"{self.root_uri}: no such directory")
        out = []
        for dirpath, _dirs, files in os.walk(self._root):
            for name in files:
                rel = Path(dirpath, name).relative_to(self._root).as_posix()
                out.append(self.stat(rel))
        return sorted(out, key=lambda o: o.key)

    def read_range(self, key: str, start: int, length: int, if_version: str | None = None) -> bytes:
        path = self._path(key)
        try:
            with path.open("rb") as fh:
                fh.seek(start)
                return fh.read(length)
        except FileNotFoundError:
            raise StorageError(f"{self.root_uri}/{key}: no such file") from None
        except OSError as exc:
            raise StorageError(f"{self.root_uri}/{key}: {exc.strerror}") from exc

    def iter_range(
        self, key: str, start: int, length: int, if_version: str | None = None
    ) -> Iterator[bytes]:
        path = self._path(key)
        try:
            with path.open("rb") as fh:
                fh.seek(start)
                left = length
                while left > 0:
                    chunk = fh.read(min(CHUNK_BYTES, left))
                    if not chunk:
                        return
                    left -= len(chunk)
                    yield chunk
        except OSError as exc:
            raise StorageError(f"{self.root_uri}/{key}: {exc.strerror}") from exc

    def read(self, key: str) -> bytes:
        return self.read_range(key, 0, self.stat(key).size_bytes)
