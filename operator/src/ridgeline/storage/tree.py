"""Directory walks that never follow symbolic links and never recurse in Python: a model
directory or a cache may be nested deeper than the interpreter's recursion limit (os.walk and
shutil.rmtree recurse per level in Python 3.11), and a link must not lead a removal outside."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path


def entries(root: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every entry under ``root`` with its ``/``-separated path relative to it, parents before
    children; directories are entered only when they are real directories, not links to one.
    An unreadable directory raises OSError (os.walk would skip it silently). Paths stay
    strings: pathlib re-parses every component of a deep path at each join."""
    stack = [("", os.fspath(root))]
    while stack:
        rel, here = stack.pop()
        with os.scandir(here) as it:
            found = sorted(it, key=lambda e: e.name)
        for entry in found:
            key = f"{rel}/{entry.name}" if rel else entry.name
            yield key, entry
            if entry.is_dir(follow_symlinks=False):
                stack.append((key, entry.path))


def _mode(path: Path) -> int | None:
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return None


def is_real_dir(path: Path) -> bool:
    """A directory itself, not a link to one; False when nothing is there."""
    mode = _mode(path)
    return mode is not None and stat.S_ISDIR(mode)


def is_other_than_file(path: Path) -> bool:
    """Something is there, and it is not a regular file (a directory, a link, a FIFO...)."""
    mode = _mode(path)
    return mode is not None and not stat.S_ISREG(mode)


def make_dirs(path: Path) -> None:
    """``mkdir -p``, one level at a time (Path.mkdir(parents=True) recurses per level)."""
    missing = []
    here = os.fspath(path)
    while not os.path.isdir(here):
        missing.append(here)
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory)


def remove_tree(path: Path) -> None:
    """Remove ``path`` and everything under it; links are removed, never followed."""
    if not is_real_dir(path):
        path.unlink(missing_ok=True)
        return
    dirs = [os.fspath(path)]
    for _key, entry in entries(path):
        if entry.is_dir(follow_symlinks=False):
            dirs.append(entry.path)
        else:
            os.unlink(entry.path)
    # Parents were listed before their children: the reverse order empties each first.
    for directory in reversed(dirs):
        os.rmdir(directory)


def remove_empty_dirs(root: Path) -> None:
    """Remove the directories under ``root`` left empty (not ``root`` itself)."""
    dirs = [entry.path for _key, entry in entries(root) if entry.is_dir(follow_symlinks=False)]
    for directory in reversed(dirs):
        with os.scandir(directory) as it:
            empty = next(it, None) is None
        if empty:
            os.rmdir(directory)
