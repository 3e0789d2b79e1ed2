"""The node cache agent on real files (a file:// store, a tmp node root): fill then hit, one copy
for models that share a URI, a new object version beside the old one until the grace period
(and not while a replica holds it), a damaged shard refilled and never named by ``current``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ridgeline.api.node_cache import CheckpointState
from ridgeline.storage import node_layout
from ridgeline.storage.download import cache_key
from ridgeline.storage.local import LocalStore
from ridgeline_serving.node_cache import fill as fill_module
from ridgeline_serving.node_cache.agent import Agent
from tests.unit.node_cache_fakes import (
    Clock,
    FakeCluster,
    make_agent,
    model,
    sample,
    settings,
    write_model,
)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes every LocalStore served through ranged reads (the downloader's only reads)."""
    served: list[int] = []
    original = LocalStore.iter_range

    def counting(self: LocalStore, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        for chunk in original(self, *args, **kwargs):
            served.append(len(chunk))
            yield chunk

    monkeypatch.setattr(LocalStore, "iter_range", counting)
    return served


def _checkpoint(root: Path, uri: str) -> Path:
    return root / "node" / cache_key(uri)


def _current(checkpoint: Path) -> node_layout.Current:
    """The version ``current`` names (the test fails where none is)."""
    current = node_layout.read_current(checkpoint)
    assert current is not None
    return current


def _filled(tmp_path: Path, **settings: Any) -> tuple[str, FakeCluster, Agent, Clock]:
    """One model on a file:// store under ``tmp_path``, and an agent that ran one pass for it."""
    uri = write_model(tmp_path / "store")
    cluster = FakeCluster([model("m", uri)])
    agent, clock = make_agent(tmp_path / "node", cluster, **settings)
    agent.run_pass()
    return uri, cluster, agent, clock


def test_fill_then_hit(tmp_path: Path, reads: list[int]) -> None:
    uri, cluster, agent, _ = _filled(tmp_path)
    checkpoint = _checkpoint(tmp_path, uri)
    current = _current(checkpoint)
    assert node_layout.verify_version(node_layout.version_dir(checkpoint, current.digest)) == []
    total = sum(reads)
    assert total == current.bytes > 0
    assert sample(agent, "bytes_downloaded_total", directory=cache_key(uri)) == total
    assert sample(agent, "misses_total", directory=cache_key(uri)) == 1

    agent.run_pass()
    assert sum(reads) == total  # the second pass read nothing from the store
    report = cluster.report()
    entry = report.checkpoints[cache_key(uri)]
    assert (entry.state, entry.digest, entry.current_digest) == (
        CheckpointState.COMPLETE,
        current.digest,
        current.digest,
    )
    assert (entry.bytes, entry.total_bytes, entry.models) == (total, total, ["ns/m"])

    # A restarted agent finds it complete: a hit, no download.
    again, _ = make_agent(tmp_path / "node", cluster)
    again.run_pass()
    assert sum(reads) == total
    assert sample(again, "hits_total", directory=cache_key(uri)) == 1
    assert sample(again, "misses_total", directory=cache_key(uri)) == 0


def test_two_models_with_one_uri_store_it_once(tmp_path: Path, reads: list[int]) -> None:
    uri = write_model(tmp_path / "store")
    cluster = FakeCluster([model("a", uri), model("b", uri, namespace="other")])
    agent, _ = make_agent(tmp_path / "node", cluster)
    agent.run_pass()
    assert [p.name for p in (tmp_path / "node").iterdir()] == [cache_key(uri)]
    assert len(node_layout.digests(_checkpoint(tmp_path, uri))) == 1
    assert sum(reads) == _current(_checkpoint(tmp_path, uri)).bytes
    assert cluster.report().checkpoints[cache_key(uri)].models == ["ns/a", "other/b"]


def test_a_new_version_fills_beside_the_old_until_grace_and_release(tmp_path: Path) -> None:
    uri, _, agent, clock = _filled(tmp_path, grace_s=600)
    checkpoint = _checkpoint(tmp_path, uri)
    old = _current(checkpoint)

    write_model(tmp_path / "store", shard=b"v" * 5000, tag="v2")  # new object versions
    replica = node_layout.hold_in_use(checkpoint, old.digest)  # a replica on the old one
    try:
        agent.run_pass()
        new = _current(checkpoint)
        assert new.digest != old.digest
        assert node_layout.digests(checkpoint) == sorted([old.digest, new.digest])
        assert (
            node_layout.version_dir(checkpoint, new.digest) / "model-00001.safetensors"
        ).read_bytes() == b"v" * 5000

        clock.offset = 3600  # past the grace period, but the replica holds it
        agent.run_pass()
        assert old.digest in node_layout.digests(checkpoint)
    finally:
        replica.close()
    # Released now: the passes while it was held counted as use, so a full grace period runs
    # from the last of them.
    agent.run_pass()
    assert old.digest in node_layout.digests(checkpoint)
    clock.offset = 3600 + 601
    agent.run_pass()
    assert node_layout.digests(checkpoint) == [new.digest]
    assert not (checkpoint / f"{old.digest}.inuse").exists()
    assert sample(agent, "evictions_total", reason="stale_version") == 1


def test_a_truncated_shard_is_refilled_and_never_named_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, _, agent, _ = _filled(tmp_path)
    checkpoint = _checkpoint(tmp_path, uri)
    current = _current(checkpoint)
    version = node_layout.version_dir(checkpoint, current.digest)
    shard = version / "model-00001.safetensors"
    good = shard.read_bytes()
    with shard.open("r+b") as fh:  # edited on the node
        fh.truncate(100)
    assert node_layout.verify_version(version) != []

    seen: list[object] = []
    original = fill_module.download_into  # type: ignore[attr-defined]

    def watching(*args: Any, **kwargs: Any) -> Any:
        seen.append(node_layout.read_current(checkpoint))  # what a replica would read now
        return original(*args, **kwargs)

    monkeypatch.setattr(fill_module, "download_into", watching)
    agent.run_pass()
    assert seen == [None]
    assert node_layout.read_current(checkpoint) == current
    assert node_layout.verify_version(version) == []
    assert shard.read_bytes() == good
    assert sample(agent, "evictions_total", reason="corrupt") == 1


def test_a_same_size_edit_is_found_by_the_hash_check_at_start(tmp_path: Path) -> None:
    e = _edited_with_manifest(tmp_path)
    os.utime(e.shard, ns=(e.st.st_atime_ns, e.st.st_mtime_ns))  # stats cannot tell
    e.agent.run_pass()
    assert e.shard.read_bytes() == b"x" * e.st.st_size  # the running agent checks stats only
    restarted, _ = make_agent(tmp_path / "node", e.cluster)
    restarted.run_pass()
    assert e.shard.read_bytes() == (e.store / "model-00001.safetensors").read_bytes()
    assert node_layout.read_current(e.checkpoint) == e.current


def test_a_deleted_models_checkpoint_goes_after_the_grace_period(tmp_path: Path) -> None:
    uri, cluster, agent, clock = _filled(tmp_path, grace_s=600)
    kubelet_made = tmp_path / "node" / cache_key("s3://b/other")
    kubelet_made.mkdir()  # a PersistentVolume's path on a node the agent never filled
    cluster.models = []
    clock.offset = 599
    agent.run_pass()
    assert _checkpoint(tmp_path, uri).is_dir()
    clock.offset = 601
    agent.run_pass()
    assert not _checkpoint(tmp_path, uri).exists()
    assert kubelet_made.is_dir()
    assert sample(agent, "evictions_total", reason="unused") == 1
    assert cluster.report().checkpoints == {}


def test_a_damaged_version_is_refilled_even_while_a_replica_holds_it(tmp_path: Path) -> None:
    # The one exception to .inuse (docs/operator.md, "When a node lacks the checkpoint"): the
    # damaged file goes at once; a replica that opened it keeps reading what it opened.
    e = _edited_with_manifest(tmp_path)
    os.utime(e.shard, ns=(e.st.st_atime_ns, e.st.st_mtime_ns))
    with node_layout.hold_in_use(e.checkpoint, e.current.digest), e.shard.open("rb") as loaded:
        restarted, _ = make_agent(tmp_path / "node", e.cluster)
        restarted.run_pass()
        assert loaded.read() == b"x" * e.st.st_size
    assert e.shard.read_bytes() == (e.store / "model-00001.safetensors").read_bytes()
    assert node_layout.read_current(e.checkpoint) == e.current


def test_the_agent_itself_refuses_a_file_uri(tmp_path: Path) -> None:
    # Whatever the status says: the production agent never copies a path of its container.
    uri = write_model(tmp_path / "store")
    cluster = FakeCluster([model("m", uri)])
    agent = Agent(settings(tmp_path / "node", grace_s=60.0), cluster)
    agent.run_pass()
    assert cluster.report().checkpoints == {}
    assert not _checkpoint(tmp_path, uri).exists()


@dataclass
class _Edited:
    store: Path
    cluster: FakeCluster
    agent: Any
    checkpoint: Path
    current: node_layout.Current
    shard: Path
    st: os.stat_result


def _edited_with_manifest(tmp_path: Path) -> _Edited:
    """A model with a sha256 manifest, filled by an agent's first pass; then one shard of the
    node's copy rewritten at the same size (only the hash check can tell)."""
    store = tmp_path / "store"
    uri = write_model(store)
    digests = {
        key: hashlib.sha256((store / key).read_bytes()).hexdigest()
        for key in ("config.json", "model-00001.safetensors", "model-00002.safetensors")
    }
    (store / "SUMS").write_text("".join(f"{d}  {k}\n" for k, d in digests.items()))
    m = model("m", uri)
    m["spec"]["model"]["sha256Manifest"] = "SUMS"
    cluster = FakeCluster([m])
    first, _ = make_agent(tmp_path / "node", cluster)
    first.run_pass()
    checkpoint = _checkpoint(tmp_path, uri)
    current = _current(checkpoint)
    shard = node_layout.version_dir(checkpoint, current.digest) / "model-00001.safetensors"
    st = shard.stat()
    shard.write_bytes(b"x" * st.st_size)
    return _Edited(store, cluster, first, checkpoint, current, shard, st)


def test_fills_go_cold_first_then_smaller_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint no version of which is on the node comes before a new version of one that
    serves, and among each the smaller first."""
    served = write_model(tmp_path / "served", shard=b"s" * 256)
    cluster = FakeCluster([model("served", served)])
    agent, _ = make_agent(tmp_path / "node", cluster)
    agent.run_pass()
    write_model(tmp_path / "served", shard=b"t" * 256, tag="v2")  # a new version: tiny
    big = write_model(tmp_path / "big", shard=b"b" * 65536)
    small = write_model(tmp_path / "small", shard=b"m" * 4096)
    cluster.models += [model("big", big), model("small", small)]
    order: list[str] = []
    original = Agent._fill

    def recording(self: Agent, fill: Any, keep: Any) -> None:
        order.append(fill.need.uri)
        original(self, fill, keep)

    monkeypatch.setattr(Agent, "_fill", recording)
    agent.run_pass()
    assert order == [small, big, served]
