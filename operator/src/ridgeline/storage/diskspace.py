"""The cache's disk: writes that are complete or raise, and a full disk reported as such.

``os.pwrite`` may write fewer bytes than asked (a filesystem that fills up mid-write does
exactly that before it fails with ENOSPC), so a write that is not looped over leaves a hole of
zeros in the file that looks written.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from ridgeline.storage.base import StorageError
from ridgeline.storage.progress import human_bytes

# A quota counts as a full disk: the same fix (free space, or a larger volume) applies.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(StorageError):
    """The weight cache's filesystem has no room for the download."""


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` or raise: short writes are continued, and a write
    that makes no progress is a full disk (OSError ENOSPC)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.ENOSPC, f"a write of {len(view)} bytes wrote none")
        view = view[n:]
        offset += n


def _existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (the cache directory may not yet)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(_existing(path)).free


def mount_point(path: Path) -> Path:
    path = _existing(path)
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def disk_full(
    root_uri: str, cache_dir: Path, needed: int | None, cause: OSError | None = None
) -> DiskFullError:
    """The error for a download that does not fit: which disk, what it needs, what is free."""
    free = free_bytes(cache_dir)
    why = "not enough space"
    if cause is not None:
        why = f"{cause.filename}: {cause.strerror}" if cause.filename else str(cause.strerror)
    need = (
        f"the download needs {human_bytes(needed)} ({needed} bytes) more"
        if needed is not None
        else "the download needs more space"
    )
    return DiskFullError(
        f"{root_uri}: cannot write the weight cache ({why}): {need}, and {cache_dir} (on the "
        f"filesystem mounted at {mount_point(cache_dir)}) has {human_bytes(free)} ({free} bytes) "
        "free. Free space there or give cache_dir a larger volume; the parts already written "
        "are kept and the next start resumes"
    )


def check_space(root_uri: str, cache_dir: Path, needed: int) -> None:
    """Fail before downloading when ``needed`` bytes cannot fit. Writes still check each
    result: space can vanish while the download runs."""
    if free_bytes(cache_dir) < needed:
        raise disk_full(root_uri, cache_dir, needed)
