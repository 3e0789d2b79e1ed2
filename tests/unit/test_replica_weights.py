"""Where a replica's weights come from (ridgeline_serving.weights): the node cache's version when
the agent completed one and it passes its check, held in use while the replica lives, with
nothing read from the store; else a download into the pod's cache, saying why."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from ridgeline.api.serving_args import ServingArgs
from ridgeline.storage import node_layout
from ridgeline.storage.download import cache_key
from ridgeline_serving.weights import fetch_weights
from tests.unit.node_cache_fakes import FakeCluster, make_agent, model, write_model


def _args(uri: str, tmp_path: Path, node_cache: Path | None) -> ServingArgs:
    return ServingArgs(
        model_uri=uri,
        model_name="m",
        max_batch_size=1,
        max_context_tokens=64,
        gpus_per_replica=0,
        compute_dtype="float32",
        cache_dir=str(tmp_path / "pod-cache"),
        node_cache_dir=str(node_cache) if node_cache else None,
    )


def _filled_node(tmp_path: Path) -> tuple[str, Path]:
    """A model in a file:// store and a node whose agent filled it; the pod's mount is the
    checkpoint's directory."""
    uri = write_model(tmp_path / "store")
    cluster = FakeCluster([model("m", uri)])
    agent, _ = make_agent(tmp_path / "node", cluster)
    agent.run_pass()
    checkpoint = tmp_path / "node" / cache_key(uri)
    assert node_layout.read_current(checkpoint) is not None
    return uri, checkpoint


def test_a_complete_version_loads_from_the_node_cache_and_nothing_from_the_store(
    tmp_path: Path,
) -> None:
    uri, checkpoint = _filled_node(tmp_path)
    shutil.rmtree(tmp_path / "store")  # the store is down: a download would fail
    weights = fetch_weights(_args(uri, tmp_path, checkpoint))
    current = node_layout.read_current(checkpoint)
    assert current is not None
    assert weights.source == "node_cache"
    assert weights.path == node_layout.version_dir(checkpoint, current.digest)
    assert (weights.path / "config.json").is_file()
    assert weights.bytes_downloaded == 0
    assert weights.bytes_from_cache == current.bytes > 0
    assert not (tmp_path / "pod-cache").exists()


def test_the_loaded_version_is_held_in_use_until_the_replica_lets_go(tmp_path: Path) -> None:
    uri, checkpoint = _filled_node(tmp_path)
    weights = fetch_weights(_args(uri, tmp_path, checkpoint))
    current = node_layout.read_current(checkpoint)
    assert current is not None
    assert node_layout.in_use(checkpoint, current.digest)
    assert not node_layout.remove_version(checkpoint, current.digest)
    weights.held.close()
    assert not node_layout.in_use(checkpoint, current.digest)


def test_a_truncated_shard_is_never_loaded_the_replica_downloads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri, checkpoint = _filled_node(tmp_path)
    current = node_layout.read_current(checkpoint)
    assert current is not None
    shard = node_layout.version_dir(checkpoint, current.digest) / "model-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])  # edited on the node
    with caplog.at_level(logging.WARNING, logger="ridgeline.serving"):
        weights = fetch_weights(_args(uri, tmp_path, checkpoint))
    assert weights.source == "download"
    assert weights.miss_reason is not None
    assert "fails its check" in weights.miss_reason
    assert "model-00001.safetensors" in weights.miss_reason
    assert weights.path.is_relative_to(tmp_path / "pod-cache")
    assert (weights.path / "model-00001.safetensors").stat().st_size == 4096
    assert "node cache miss" in caplog.text
    # A version that failed is not held: the agent may refill it.
    assert not node_layout.in_use(checkpoint, current.digest)


def test_a_node_without_the_checkpoint_downloads_and_says_why(tmp_path: Path) -> None:
    uri = write_model(tmp_path / "store")
    empty = tmp_path / "node" / cache_key(uri)
    empty.mkdir(parents=True)  # what the kubelet makes for the volume on a fresh node
    weights = fetch_weights(_args(uri, tmp_path, empty))
    assert weights.source == "download"
    assert weights.miss_reason is not None
    assert "no complete copy" in weights.miss_reason
    assert weights.bytes_downloaded > 0


def test_a_node_cache_of_another_uri_is_not_loaded(tmp_path: Path) -> None:
    _, checkpoint = _filled_node(tmp_path)
    other = write_model(tmp_path / "other", tag="other")
    weights = fetch_weights(_args(other, tmp_path, checkpoint))
    assert weights.source == "download"
    assert weights.miss_reason is not None
    assert "not " + other in weights.miss_reason


def test_without_a_node_cache_the_replica_downloads_as_before(tmp_path: Path) -> None:
    uri = write_model(tmp_path / "store")
    weights = fetch_weights(_args(uri, tmp_path, None))
    assert weights.source == "download"
    assert weights.miss_reason is None
    assert weights.bytes_downloaded > 0


def test_the_containers_age_is_read_from_pid_1_in_a_pod_only(tmp_path: Path) -> None:
    """The cold start's part before the replica (Ray joining, Serve placing it): PID 1 of the
    container started at tick 12,000 (120 s after boot at 100 ticks/s), now is 150 s after boot.
    A command name with spaces and parentheses does not shift the fields."""
    import os

    from ridgeline_serving.startup import container_age_s

    ticks = os.sysconf("SC_CLK_TCK")
    (tmp_path / "1").mkdir()
    fields = ["S", *["0"] * 18, str(120 * ticks), "0"]
    (tmp_path / "1" / "stat").write_text(f"1 (ray start (x)) {' '.join(fields)}\n")
    (tmp_path / "uptime").write_text("150.00 290.00\n")
    pod = {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}
    assert container_age_s(tmp_path, pod) == pytest.approx(30.0)
    assert container_age_s(tmp_path, {}) is None  # PID 1 is the machine's init
    (tmp_path / "uptime").write_text("")
    assert container_age_s(tmp_path, pod) is None
