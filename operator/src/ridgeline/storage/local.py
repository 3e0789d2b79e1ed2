"""``file://`` and plain paths: a local directory or a mounted volume. Links to files are
followed (inside the root only); links to directories are not entered."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ridgeline.storage import tree
from ridgeline.storage.base import CHUNK_BYTES, ObjectInfo, StorageError


class LocalStore:
    def __init__(self, root: Path) -> None:
        self._root = root

    @property
    def root_uri(self) -> str:
        return self._root.as_uri()

    def _path(self, key: str) -> Path:
        try:
            path = (self._root / key).resolve()
            root = self._root.resolve()
        except (RuntimeError, OSError) as exc:
            # Python 3.11 raises RuntimeError for a loop of links, later ones OSError ELOOP.
            raise StorageError(
                f"{self.root_uri}/{key}: a symbolic link loop at {self._root / key} (a link "
                f"that leads back to itself): {exc}"
            ) from exc
        if root not in path.parents and path != root:
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
        try:
            for key, entry in tree.entries(self._root):
                # A link to a directory is not entered (as os.walk does); links to files are
                # files, and a broken link or a loop of links is named by stat.
                try:
                    linked_dir = entry.is_dir()
                except OSError:  # a loop of links: stat names it
                    linked_dir = False
                if not linked_dir:
                    out.append(self.stat(key))
        except OSError as exc:
            where = exc.filename or self._root
            raise StorageError(f"{self.root_uri}: cannot list {where}: {exc.strerror}") from exc
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
