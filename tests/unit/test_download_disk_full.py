"""A full cache disk fails the download, loudly, and never serves corrupt weights (issue 28,
item 1): on a real small tmpfs (mounting one needs root, which CI has), and with short writes
simulated where it does not."""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ridgeline.storage import ObjectInfo, ObjectStore, StorageError, open_store
from ridgeline.storage.cache_state import COMPLETE
from ridgeline.storage.download import cache_key, download_model
from ridgeline.storage.local import LocalStore

MIB = 2**20
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs the tests as root)"
)


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def _model(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    """A model directory with one weights file of ``size`` bytes that are never zero."""
    src = tmp_path / "model"
    src.mkdir()
    data = bytes((i % 251) + 1 for i in range(251)) * (size // 251 + 1)
    (src / "model.safetensors").write_bytes(data[:size])
    (src / "config.json").write_text("{}")
    return src, data[:size]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _SpaceVanishes:
    """A store that fills the cache's disk, up to ``leave`` free bytes, when the part at
    ``at_byte`` is read: someone else's files taking the space mid-download. Counts reads."""

    def __init__(self, inner: ObjectStore, disk: Path, at_byte: int, leave: int) -> None:
        self.inner, self.disk, self.at_byte, self.leave = inner, disk, at_byte, leave
        self.root_uri = inner.root_uri
        self.reads = 0
        self.filled = False

    def list(self) -> builtins.list[ObjectInfo]:
        return self.inner.list()

    def stat(self, key: str) -> ObjectInfo:
        return self.inner.stat(key)

    def read(self, key: str) -> bytes:
        return self.inner.read(key)

    def read_range(self, key: str, start: int, length: int, if_version: str | None = None) -> bytes:
        return b"".join(self.iter_range(key, start, length, if_version))

    def iter_range(
        self, key: str, start: int, length: int, if_version: str | None = None
    ) -> Iterator[bytes]:
        self.reads += 1
        filler = self.disk / "someone-elses-file"
        if key == "model.safetensors" and start == self.at_byte and not self.filled:
            self.filled = True
            free = os.statvfs(self.disk).f_bavail * os.statvfs(self.disk).f_frsize
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.posix_fallocate(fd, 0, free - self.leave)
            finally:
                os.close(fd)
        return self.inner.iter_range(key, start, length, if_version)


def _recorded_parts(dest: Path) -> list[int]:
    state = dest / "model.safetensors.partial.json"
    done: list[int] = json.loads(state.read_text())["done"]
    return done


@needs_root
def test_a_download_larger_than_the_disk_fails_up_front_naming_the_disk(tmp_path: Path) -> None:
    src, data = _model(tmp_path, 6 * MIB)
    with _tmpfs(tmp_path / "cache", "4m") as cache:
        with pytest.raises(StorageError) as exc:
            download_model(open_store(str(src)), cache, part_bytes=MIB, progress=False)
        message = str(exc.value)
        assert "cannot write the weight cache (not enough space)" in message
        assert f"needs 6.29 MB ({6 * MIB + 2} bytes) more" in message
        assert (
            f"{cache / cache_key(src.as_uri())} (on the filesystem mounted at {cache})" in message
        )
        assert "MB (" in message.split("has ", 1)[1]  # the free bytes, in both units
        dest = cache / cache_key(src.as_uri())
        assert not (dest / COMPLETE).exists()
        assert not (dest / "model.safetensors").exists()
        # Nothing was fetched: the space check comes before the first byte.
        assert os.statvfs(cache).f_bfree * os.statvfs(cache).f_frsize > 3 * MIB
        subprocess.run(["mount", "-o", "remount,size=16m", str(cache)], check=True)
        stats = download_model(open_store(str(src)), cache, part_bytes=MIB, progress=False)
        assert _sha((stats.path / "model.safetensors").read_bytes()) == _sha(data)


@needs_root
def test_space_that_vanishes_mid_download_fails_it_and_the_resume_is_exact(
    tmp_path: Path,
) -> None:
    """The issue's corrupt case: the up-front check passes, then the disk fills while a part
    is written. The part is short-written, then the disk refuses: the download fails, the part
    is not recorded as done, and the resumed download's file has the right sha256."""
    src, data = _model(tmp_path, 6 * MIB)
    with _tmpfs(tmp_path / "cache", "8m") as cache:
        store = _SpaceVanishes(LocalStore(src), cache, at_byte=2 * MIB, leave=256 * 1024)
        with pytest.raises(StorageError, match=r"cannot write the weight cache \(.*") as exc:
            download_model(store, cache, part_bytes=MIB, parallel=1, progress=False)
        assert "No space left on device" in str(exc.value)
        assert "MB (4194304 bytes) more" in str(exc.value)  # parts 2 to 5 are still needed
        dest = cache / cache_key(src.as_uri())
        assert not (dest / COMPLETE).exists()
        assert not (dest / "model.safetensors").exists()
        assert _recorded_parts(dest) == [0, 1]
        partial = (dest / "model.safetensors.partial").read_bytes()
        assert partial[: 2 * MIB] == data[: 2 * MIB]  # what is recorded is what was written

        (cache / "someone-elses-file").unlink()  # the space is freed
        store.reads = 0
        stats = download_model(store, cache, part_bytes=MIB, parallel=1, progress=False)
        assert _sha((stats.path / "model.safetensors").read_bytes()) == _sha(data)
        assert store.reads == 4  # parts 2 to 5: the two recorded parts were kept
        assert json.loads((dest / COMPLETE).read_text())["uri"] == src.as_uri()


def test_short_writes_are_continued_not_counted_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filesystem may write less than asked without an error; the rest must still be written."""
    src, data = _model(tmp_path, 300_000)
    real_pwrite = os.pwrite

    def short(fd: int, buf: bytes, offset: int) -> int:
        return real_pwrite(fd, bytes(buf)[:7_000], offset)

    monkeypatch.setattr(os, "pwrite", short)
    stats = download_model(
        open_store(str(src)), tmp_path / "cache", part_bytes=100_000, progress=False
    )
    assert _sha((stats.path / "model.safetensors").read_bytes()) == _sha(data)


def test_a_part_that_fails_midway_is_not_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third part is half written, then a write makes no progress: the download fails
    as a full disk, and only the two whole parts are recorded."""
    src, data = _model(tmp_path, 500_000)
    real_pwrite = os.pwrite

    def fills_up(fd: int, buf: bytes, offset: int) -> int:
        if offset >= 250_000:
            return 0
        return real_pwrite(fd, bytes(buf)[: 250_000 - offset], offset)

    monkeypatch.setattr(os, "pwrite", fills_up)
    cache = tmp_path / "cache"
    store = open_store(str(src))
    with pytest.raises(StorageError, match=r"cannot write the weight cache .* more, and ") as exc:
        download_model(store, cache, part_bytes=100_000, parallel=1, progress=False)
    assert exc.value.__cause__ is not None
    assert getattr(exc.value.__cause__, "errno", None) == errno.ENOSPC
    dest = cache / cache_key(src.as_uri())
    assert _recorded_parts(dest) == [0, 1]
    assert not (dest / COMPLETE).exists()
    monkeypatch.undo()
    stats = download_model(store, cache, part_bytes=100_000, parallel=1, progress=False)
    assert _sha((stats.path / "model.safetensors").read_bytes()) == _sha(data)
