"""The node weight cache's on-disk layout: digests, ``current``, the stat and hash checks a
replica and the agent run, and the ``.inuse`` lock that keeps a loaded version on disk."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from ridgeline.storage.base import ObjectInfo
from ridgeline.storage.cache_state import COMPLETE
from ridgeline.storage.download import download_into, select_files
from ridgeline.storage.local import LocalStore
from ridgeline.storage.node_layout import (
    Current,
    check_files,
    checkpoint_digest,
    discard,
    ensure_inuse,
    hold_in_use,
    in_use,
    present_bytes,
    read_current,
    remove_checkpoint,
    remove_version,
    seed_version,
    verify_version,
    verify_version_hashes,
    version_dir,
    write_current,
)


def _model(root: Path) -> LocalStore:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text('{"model_type": "llama"}')
    (root / "model.safetensors").write_bytes(b"w" * 5000)
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "tok.json").write_text("{}")
    return LocalStore(root)


def _filled(tmp_path: Path, manifest: bool = False) -> tuple[Path, str]:
    store = _model(tmp_path / "store")
    key = None
    if manifest:
        lines = [
            f"{hashlib.sha256((tmp_path / 'store' / k).read_bytes()).hexdigest()}  {k}"
            for k in ("config.json", "model.safetensors", "sub/tok.json")
        ]
        (tmp_path / "store" / "SHA256SUMS").write_text("\n".join(lines) + "\n")
        key = "SHA256SUMS"
    objects = store.list()
    digest = checkpoint_digest(select_files(objects, key))
    checkpoint = tmp_path / "node" / "ckpt"
    download_into(
        store, version_dir(checkpoint, digest), objects=objects, manifest_key=key, progress=False
    )
    return checkpoint, digest


def test_digest_depends_on_versions_not_order() -> None:
    a = [ObjectInfo("a", 1, "e1"), ObjectInfo("b", 2, "e2")]
    assert checkpoint_digest(a) == checkpoint_digest(list(reversed(a)))
    assert checkpoint_digest(a) != checkpoint_digest([ObjectInfo("a", 1, "e9"), a[1]])
    assert len(checkpoint_digest(a)) == 16


def test_version_dir_refuses_what_is_not_a_digest(tmp_path: Path) -> None:
    for bad in ("../../etc", "current", "0123456789abcdeF", ""):
        with pytest.raises(ValueError, match="digest"):
            version_dir(tmp_path, bad)


def test_current_round_trip_and_garbage(tmp_path: Path) -> None:
    assert read_current(tmp_path) is None
    write_current(tmp_path, Current("0123456789abcdef", "s3://b/m", 10, 2))
    assert read_current(tmp_path) == Current("0123456789abcdef", "s3://b/m", 10, 2)
    assert (tmp_path / "current").stat().st_mode & 0o777 == 0o644
    (tmp_path / "current").write_text('{"digest": "../x", "uri": "u", "bytes": 1, "files": 1}')
    assert read_current(tmp_path) is None
    (tmp_path / "current").write_text("{trunc")
    assert read_current(tmp_path) is None


def test_a_complete_version_verifies_and_records_each_file(tmp_path: Path) -> None:
    checkpoint, digest = _filled(tmp_path, manifest=True)
    version = version_dir(checkpoint, digest)
    assert verify_version(version) == []
    assert verify_version_hashes(version) == []
    marker = json.loads((version / COMPLETE).read_text())
    entry = marker["files"]["model.safetensors"]
    assert entry["size"] == 5000
    assert entry["mtime_ns"] == (version / "model.safetensors").stat().st_mtime_ns
    assert len(entry["sha256"]) == 64


def test_a_truncated_shard_is_found_by_stats(tmp_path: Path) -> None:
    checkpoint, digest = _filled(tmp_path)
    version = version_dir(checkpoint, digest)
    with (version / "model.safetensors").open("r+b") as fh:
        fh.truncate(100)
    assert verify_version(version) == ["model.safetensors: 100 bytes, the marker records 5000"]


def test_an_edit_of_the_same_size_is_found_by_mtime_and_hash(tmp_path: Path) -> None:
    checkpoint, digest = _filled(tmp_path, manifest=True)
    version = version_dir(checkpoint, digest)
    path = version / "sub" / "tok.json"
    st = path.stat()
    path.write_text("[]")
    assert verify_version(version) == [
        "sub/tok.json: modified since it was written (mtime changed)"
    ]
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # an edit that hides its mtime
    assert verify_version(version) == []
    assert verify_version_hashes(version) == ["sub/tok.json: sha256 differs from the manifest's"]


def test_missing_marker_missing_file_and_partials(tmp_path: Path) -> None:
    checkpoint, digest = _filled(tmp_path)
    version = version_dir(checkpoint, digest)
    (version / "config.json").unlink()
    (version / "x.partial").write_bytes(b"")
    assert set(check_files(version)) == {"config.json", "x.partial"}
    discard(version, check_files(version))
    assert not (version / "x.partial").exists()
    assert verify_version(version) == [
        f"{version}: no completion marker (incomplete or being refilled)"
    ]


def test_a_held_version_is_in_use_and_not_removed(tmp_path: Path) -> None:
    checkpoint, digest = _filled(tmp_path)
    ensure_inuse(checkpoint, digest)
    write_current(checkpoint, Current(digest, "u", 1, 1))
    assert not in_use(checkpoint, digest)
    with hold_in_use(checkpoint, digest):  # another open file description, as a replica's
        assert in_use(checkpoint, digest)
        assert not remove_version(checkpoint, digest)
        assert not remove_checkpoint(checkpoint)
        assert verify_version(version_dir(checkpoint, digest)) == []
    assert not in_use(checkpoint, digest)
    assert remove_version(checkpoint, digest)
    assert read_current(checkpoint) is None
    assert sorted(p.name for p in checkpoint.iterdir()) == []
    assert remove_checkpoint(checkpoint)
    assert not checkpoint.exists()


def test_hold_in_use_without_the_agents_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        hold_in_use(tmp_path, "0123456789abcdef")


def test_present_bytes_counts_written_bytes(tmp_path: Path) -> None:
    checkpoint, digest = _filled(tmp_path)
    assert present_bytes(version_dir(checkpoint, digest)) >= 5000
    sparse = tmp_path / "sparse"
    sparse.mkdir()
    with (sparse / "f.partial").open("wb") as fh:
        fh.truncate(10 * 2**20)
    assert present_bytes(sparse) < 2**20


def test_seed_links_unchanged_intact_files_only(tmp_path: Path) -> None:
    checkpoint, old = _filled(tmp_path)
    store = LocalStore(tmp_path / "store")
    (tmp_path / "store" / "model.safetensors").write_bytes(b"n" * 6000)  # a new version
    files = select_files(store.list(), None)
    new = checkpoint_digest(files)
    old_dir = version_dir(checkpoint, old)
    (old_dir / "sub" / "tok.json").write_text("[]")  # damaged in the old version: not linked
    assert seed_version(checkpoint, new, files, store.root_uri) == ["config.json"]
    new_dir = version_dir(checkpoint, new)
    assert (new_dir / "config.json").stat().st_ino == (old_dir / "config.json").stat().st_ino
    stats = download_into(store, new_dir, objects=store.list(), progress=False)
    assert stats.bytes_downloaded == 6000 + 2  # the new shard and the damaged file's "{}"
    assert verify_version(new_dir) == []


def test_a_damaged_file_is_discarded_from_every_version_that_links_it(tmp_path: Path) -> None:
    # A start-up hash check finds a shard of the current version damaged where its inode is
    # hard-linked from an older version whose stats still match: the older version must not
    # seed it back into the refill.
    checkpoint, old = _filled(tmp_path, manifest=True)
    store_dir = tmp_path / "store"
    (store_dir / "model.safetensors").write_bytes(b"n" * 6000)  # a new version
    sums = [
        f"{hashlib.sha256((store_dir / k).read_bytes()).hexdigest()}  {k}"
        for k in ("config.json", "model.safetensors", "sub/tok.json")
    ]
    (store_dir / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    store = LocalStore(store_dir)
    files = select_files(store.list(), "SHA256SUMS")
    new = checkpoint_digest(files)
    assert "sub/tok.json" in seed_version(checkpoint, new, files, store.root_uri)
    new_dir, old_dir = version_dir(checkpoint, new), version_dir(checkpoint, old)
    download_into(store, new_dir, objects=store.list(), manifest_key="SHA256SUMS", progress=False)
    shared = new_dir / "sub" / "tok.json"
    st = shared.stat()
    shared.write_text("[]")
    os.utime(shared, ns=(st.st_atime_ns, st.st_mtime_ns))  # only the hash check can tell
    problems = check_files(new_dir, hashes=True)
    assert list(problems) == ["sub/tok.json"]
    discard(new_dir, problems)
    assert "sub/tok.json" not in seed_version(checkpoint, new, files, store.root_uri)
    assert not (old_dir / "sub" / "tok.json").exists()
    assert list(check_files(old_dir)) == [""]  # no longer complete: never a seed again
    assert (old_dir / "config.json").exists()  # its other files stay
