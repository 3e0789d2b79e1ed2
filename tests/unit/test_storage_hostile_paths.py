"""``file://`` model directories and listings that used to end in a traceback (issue 28, low
items): a loop of symbolic links, and trees or keys nested deeper than Python recurses or
longer than the filesystem allows."""

from __future__ import annotations

from pathlib import Path

import pytest

from ridgeline.storage import StorageError, open_store, parse_model_uri, tree
from ridgeline.storage.download import download_model


def _model(root: Path) -> Path:
    root.mkdir()
    (root / "config.json").write_text("{}")
    (root / "model.safetensors").write_bytes(b"weights")
    return root


def test_a_symlink_loop_in_a_file_model_dir_is_an_error_naming_it(tmp_path: Path) -> None:
    src = _model(tmp_path / "model")
    (src / "loop").symlink_to("loop")
    with pytest.raises(StorageError, match=r"/model/loop: a symbolic link loop at .*/model/loop"):
        open_store(str(src)).list()
    with pytest.raises(StorageError, match=r"a symbolic link loop at .*/model/loop"):
        download_model(open_store(src.as_uri()), tmp_path / "cache", progress=False)


def test_a_model_path_that_is_a_symlink_loop_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(StorageError, match=r"/a: cannot resolve the path: .*loop"):
        parse_model_uri(str(tmp_path / "a"))


def test_links_to_files_are_followed_and_links_to_directories_are_not_entered(
    tmp_path: Path,
) -> None:
    src = _model(tmp_path / "model")
    (src / "tokenizer.json").symlink_to(src / "config.json")
    (src / "again").symlink_to(src, target_is_directory=True)
    keys = [o.key for o in open_store(str(src)).list()]
    assert keys == ["config.json", "model.safetensors", "tokenizer.json"]


def test_a_model_dir_nested_1500_levels_deep_is_listed(tmp_path: Path) -> None:
    """os.walk recursed once per level and raised RecursionError past about 1,000 (the cache's
    side of such a key is in test_download_cache)."""
    src = _model(tmp_path / "model")
    deep = src
    try:
        for _ in range(1500):  # Path.mkdir(parents=True) would recurse as deep
            deep = deep / "a"
            deep.mkdir()
        (deep / "x.json").write_text("deep")
        keys = [o.key for o in open_store(str(src)).list()]
        assert keys == ["a/" * 1500 + "x.json", "config.json", "model.safetensors"]
    finally:
        # pytest's own clean-up of old temporary directories recurses per level.
        tree.remove_tree(src / "a")
