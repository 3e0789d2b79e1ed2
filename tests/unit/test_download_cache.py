"""The node-local weight cache against hostile or changing listings, with an in-memory S3
client behind the real S3Store: keys that escape the cache, an update in place, a damaged
completion marker. (MinIO refuses such keys, so the real server cannot produce them.)"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ridgeline.storage import StorageError
from ridgeline.storage.cache_state import COMPLETE, UnsafeKeyError
from ridgeline.storage.download import cache_key, download_model
from ridgeline.storage.s3 import S3Store


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def iter_chunks(self, size: int) -> Iterator[bytes]:
        stream = io.BytesIO(self._data)
        while chunk := stream.read(size):
            yield chunk

    def read(self) -> bytes:
        return self._data


class FakeS3:
    """The three boto3 calls S3Store makes, over a dict of key -> bytes (any key AWS allows)."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = dict(objects)
        self.gets = 0

    def get_paginator(self, name: str) -> Any:
        assert name == "list_objects_v2"
        client = self

        class Pages:
            def paginate(self, Bucket: str, Prefix: str) -> list[dict[str, Any]]:  # noqa: N803
                return [
                    {
                        "Contents": [
                            {"Key": k, "Size": len(v), "ETag": f'"{hashlib.md5(v).hexdigest()}"'}
                            for k, v in sorted(client.objects.items())
                            if k.startswith(Prefix)
                        ]
                    }
                ]

        return Pages()

    def get_object(self, Bucket: str, Key: str, Range: str = "", IfMatch: str = "") -> Any:  # noqa: N803
        self.gets += 1
        data = self.objects[Key]
        if IfMatch:
            assert IfMatch.strip('"') == hashlib.md5(data).hexdigest()
        if Range:
            start, end = (int(x) for x in Range.removeprefix("bytes=").split("-"))
            data = data[start : end + 1]
        return {"Body": _Body(data)}


def _store(client: FakeS3, prefix: str) -> S3Store:
    return S3Store("s3", "models", prefix, client=client)


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


# ---- 1. object keys must stay inside their model's directory ----------------------------------


@pytest.mark.parametrize(
    "hostile",
    [
        "m/w/../../../../x",  # climbs out of the cache root
        "m//tmp/x",  # an absolute path once the prefix is stripped
        "m/sub/../config.json",  # stays inside, but a second name for a listed file
        "m/sub/./x",  # likewise
        "m/config.json.partial",  # the downloader's own partial file for config.json
    ],
)
def test_key_that_leaves_the_model_directory_is_refused_and_named(
    tmp_path: Path, hostile: str
) -> None:
    cache = tmp_path / "cache"
    client = FakeS3({"m/config.json": b"{}", hostile: b"pwned"})
    with pytest.raises(UnsafeKeyError, match=r"s3://models/m: refusing object key '.*'") as exc:
        download_model(_store(client, "m"), cache, progress=False)
    assert repr(hostile.removeprefix("m/")) in str(exc.value)
    assert client.gets == 0  # refused before anything was written
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".lock"]


def test_one_models_listing_cannot_replace_another_models_cached_weights(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    good = FakeS3({"good/config.json": b"{}", "good/model.safetensors": b"real weights"})
    victim = download_model(_store(good, "good"), cache, progress=False).path
    other = cache_key("s3://models/good")
    assert victim.name == other
    evil = FakeS3(
        {
            "evil/config.json": b"{}",
            f"evil/x/../../{other}/model.safetensors": b"attacker weights",
        }
    )
    with pytest.raises(UnsafeKeyError, match=rf"refusing object key 'x/\.\./\.\./{other}"):
        download_model(_store(evil, "evil"), cache, progress=False)
    assert (victim / "model.safetensors").read_bytes() == b"real weights"
    assert download_model(_store(good, "good"), cache, progress=False).reused


def test_a_key_used_as_another_keys_directory_is_refused(tmp_path: Path) -> None:
    client = FakeS3({"m/a": b"1", "m/a/b": b"2"})
    with pytest.raises(UnsafeKeyError, match="'a': other keys use it as a directory"):
        download_model(_store(client, "m"), tmp_path, progress=False)


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("a/" * 2100 + "x", r"4201 characters, 2101 levels"),  # a path past PATH_MAX
        ("n" * 300, r"300 characters, 1 levels"),  # a name past NAME_MAX
        ("d" * 256 + "/x", r"258 characters, 2 levels"),  # a directory name past NAME_MAX
    ],
    ids=["path", "name", "directory-name"],
)
def test_a_key_longer_than_the_filesystem_allows_is_refused_and_named(
    tmp_path: Path, key: str, why: str
) -> None:
    client = FakeS3({"m/config.json": b"{}", f"m/{key}": b"x"})
    with pytest.raises(UnsafeKeyError, match=why) as exc:
        download_model(_store(client, "m"), tmp_path, progress=False)
    message = str(exc.value)
    assert "longer than the cache's filesystem allows" in message
    assert repr(f"{key[:60]}...{key[-16:]}") in message  # named, but not 4 KB of it
    assert len(message) < 500
    assert client.gets == 0


def test_a_key_1500_levels_deep_is_downloaded_and_replaced(tmp_path: Path) -> None:
    """Within PATH_MAX, so the filesystem holds it; the cache's walks and mkdir -p used to
    recurse once per level (RecursionError past about 1,000)."""
    key = "a/" * 1500 + "x"
    client = FakeS3({"m/config.json": b"{}", f"m/{key}": b"deep"})
    try:
        stats = download_model(_store(client, "m"), tmp_path, progress=False)
        assert stats.path.joinpath(*key.split("/")).read_bytes() == b"deep"
    finally:
        # The update removes the 1,500 levels (and pytest's own clean-up would recurse).
        client.objects = {"m/config.json": b"{}", "m/a": b"now a file"}
        again = download_model(_store(client, "m"), tmp_path, progress=False)
    assert (again.path / "a").read_bytes() == b"now a file"


def test_nested_keys_that_stay_inside_are_downloaded(tmp_path: Path) -> None:
    client = FakeS3({"m/config.json": b"{}", "m/sub/dir/tokenizer.json": b"tok"})
    stats = download_model(_store(client, "m"), tmp_path, progress=False)
    assert (stats.path / "sub" / "dir" / "tokenizer.json").read_bytes() == b"tok"


# ---- 8. an update in place: the cache holds exactly the current listing -----------------------


def test_update_in_place_removes_files_no_longer_listed(tmp_path: Path) -> None:
    client = FakeS3({"m/config.json": b"{}", "m/model.safetensors": b"old single file"})
    first = download_model(_store(client, "m"), tmp_path, progress=False)
    assert _files(first.path) >= {"config.json", "model.safetensors"}
    # Re-uploaded as shards at the same URI: the old single file is gone from the bucket.
    client.objects = {
        "m/config.json": b"{}",
        "m/model.safetensors.index.json": b'{"weight_map": {}}',
        "m/model-00001-of-00002.safetensors": b"shard one",
        "m/model-00002-of-00002.safetensors": b"shard two",
    }
    second = download_model(_store(client, "m"), tmp_path, progress=False)
    assert not second.reused
    listed = {k.removeprefix("m/") for k in client.objects}
    assert _files(second.path) - {COMPLETE, ".ridgeline-versions.json"} == listed
    versions = json.loads((second.path / ".ridgeline-versions.json").read_text())
    assert set(versions) == listed
    assert download_model(_store(client, "m"), tmp_path, progress=False).reused


def test_a_changed_object_is_fetched_again_by_its_version(tmp_path: Path) -> None:
    client = FakeS3({"m/config.json": b"{}", "m/model.safetensors": b"version one"})
    download_model(_store(client, "m"), tmp_path, progress=False)
    client.objects["m/model.safetensors"] = b"version two"  # same size, new ETag
    stats = download_model(_store(client, "m"), tmp_path, progress=False)
    assert (stats.path / "model.safetensors").read_bytes() == b"version two"
    assert stats.bytes_downloaded == len(b"version two")  # config.json was kept


def test_stale_partial_files_of_unlisted_objects_are_removed(tmp_path: Path) -> None:
    client = FakeS3({"m/config.json": b"{}"})
    dest = tmp_path / cache_key("s3://models/m")
    dest.mkdir(parents=True)
    (dest / "old.safetensors.partial").write_bytes(b"half")
    (dest / "old.safetensors.partial.json").write_text("{}")
    (dest / "gone" / "deep").mkdir(parents=True)
    (dest / "gone" / "deep" / "file").write_text("x")
    stats = download_model(_store(client, "m"), tmp_path, progress=False)
    assert _files(stats.path) == {"config.json", COMPLETE, ".ridgeline-versions.json"}
    assert not (dest / "gone").exists()


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"m/tokenizer": b"a file"}, {"m/tokenizer/vocab.json": b"now a directory"}),
        ({"m/tokenizer/vocab.json": b"a directory"}, {"m/tokenizer": b"now a file"}),
        ({"m/a/b/c/d": b"deep"}, {"m/a/b": b"a file half-way down"}),
    ],
    ids=["file-to-directory", "directory-to-file", "deep-directory-to-file"],
)
def test_an_update_that_turns_a_file_into_a_directory_or_back_is_downloaded(
    tmp_path: Path, before: dict[str, bytes], after: dict[str, bytes]
) -> None:
    """Issue 28, item 6: the old layout used to stand in the way ("Not a directory") until
    someone deleted the cache by hand."""
    client = FakeS3({"m/config.json": b"{}", **before})
    download_model(_store(client, "m"), tmp_path, progress=False)
    client.objects = {"m/config.json": b"{}", **after}
    stats = download_model(_store(client, "m"), tmp_path, progress=False)
    assert _files(stats.path) - {COMPLETE, ".ridgeline-versions.json"} == {
        k.removeprefix("m/") for k in client.objects
    }
    for key, data in after.items():
        assert (stats.path / key.removeprefix("m/")).read_bytes() == data
    assert download_model(_store(client, "m"), tmp_path, progress=False).reused


def test_a_link_where_a_directory_must_go_is_replaced_not_followed(tmp_path: Path) -> None:
    """A link inside the cache (never made by the downloader) is removed, and what it pointed
    to is left alone."""
    client = FakeS3({"m/config.json": b"{}", "m/keep/a": b"kept"})
    dest = download_model(_store(client, "m"), tmp_path, progress=False).path
    (dest / "tok").symlink_to(dest / "keep", target_is_directory=True)
    client.objects["m/tok/b"] = b"through the link?"
    stats = download_model(_store(client, "m"), tmp_path, progress=False)
    assert not (dest / "tok").is_symlink()
    assert (dest / "tok" / "b").read_bytes() == b"through the link?"
    assert not (dest / "keep" / "b").exists()
    assert (dest / "keep" / "a").read_bytes() == b"kept"
    assert download_model(_store(client, "m"), tmp_path, progress=False).reused
    assert stats.path == dest


# ---- 9. a damaged completion marker means "incomplete", never a crash ------------------------


@pytest.mark.parametrize("damage", [b"", b'{"uri": "s3://models/m", "vers', b"\xff\xfe", b"[1, 2]"])
def test_damaged_marker_is_treated_as_incomplete(tmp_path: Path, damage: bytes) -> None:
    client = FakeS3({"m/config.json": b"{}", "m/model.safetensors": b"weights"})
    first = download_model(_store(client, "m"), tmp_path, progress=False)
    (first.path / COMPLETE).write_bytes(damage)
    gets = client.gets
    again = download_model(_store(client, "m"), tmp_path, progress=False)
    assert not again.reused
    assert client.gets == gets  # files with recorded versions were kept, not fetched again
    assert again.bytes_downloaded == 0
    assert json.loads((first.path / COMPLETE).read_text())["uri"] == "s3://models/m"
    assert download_model(_store(client, "m"), tmp_path, progress=False).reused


def test_marker_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash while the marker is written leaves no marker (not a torn one) and no temp file."""
    import ridgeline.storage.cache_state as cs

    client = FakeS3({"m/config.json": b"{}"})
    real_replace = cs.os.replace

    def crash(src: Any, dst: Any) -> None:
        if str(dst).endswith(COMPLETE):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(cs.os, "replace", crash)
    with pytest.raises(
        StorageError, match=r"s3://models/m: cannot write the weight cache .*No space left"
    ):
        download_model(_store(client, "m"), tmp_path, progress=False)
    dest = tmp_path / cache_key("s3://models/m")
    assert not (dest / COMPLETE).exists()
    assert not [p for p in dest.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    assert not download_model(_store(client, "m"), tmp_path, progress=False).reused
    assert download_model(_store(client, "m"), tmp_path, progress=False).reused


def test_listing_errors_still_name_the_uri(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="s3://models/none: no objects under this prefix"):
        download_model(_store(FakeS3({}), "none"), tmp_path, progress=False)


def test_an_unwritable_cache_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match=r"s3://models/m: cannot write the weight cache"):
        download_model(
            _store(FakeS3({"m/config.json": b"{}"}), "m"), blocker / "cache", progress=False
        )


def test_a_root_with_no_model_files_says_so(tmp_path: Path) -> None:
    from ridgeline.storage import open_store

    (tmp_path / "empty").mkdir()
    with pytest.raises(StorageError, match="empty: no model files to download"):
        download_model(open_store(str(tmp_path / "empty")), tmp_path / "cache", progress=False)
