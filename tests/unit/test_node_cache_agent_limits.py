"""The node cache agent's limits and failures: the size budget (least recently used unneeded
checkpoint evicted, else Waiting), models for other nodes, a failing store, the loop surviving
an API error, and a model's credentials never written anywhere."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ridgeline.api.node_cache import CheckpointState
from ridgeline.storage import node_layout
from ridgeline.storage.download import cache_key
from tests.unit.node_cache_fakes import FakeCluster, make_agent, model, sample, write_model

GPU = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
SHARD = b"w" * 4096


def _three(tmp_path: Path) -> list[str]:
    return [
        write_model(tmp_path / f"store-{n}", shard=bytes([65 + i]) * 4096)
        for i, n in enumerate("abc")
    ]


def _size(uri: str) -> int:
    return sum(f.stat().st_size for f in Path(uri.removeprefix("file://")).iterdir())


def test_budget_evicts_the_least_recently_used_checkpoint_no_model_needs(tmp_path: Path) -> None:
    a, b, c = _three(tmp_path)
    one = _size(a)
    root = tmp_path / "node"
    cluster = FakeCluster([model("a", a), model("b", b)])
    agent, _ = make_agent(root, cluster, budget=2 * one + one // 2, grace_s=10**6)
    agent.run_pass()
    # b was used more recently than a; neither is needed any more, c is.
    current_a = node_layout.read_current(root / cache_key(a))
    assert current_a is not None
    os.utime(node_layout.inuse_path(root / cache_key(a), current_a.digest), (1, 1))
    cluster.models = [model("c", c)]
    agent.run_pass()
    assert sorted(p.name for p in root.iterdir()) == sorted([cache_key(b), cache_key(c)])
    assert sample(agent, "evictions_total", reason="budget") == 1
    assert cluster.report().checkpoints[cache_key(c)].state == CheckpointState.COMPLETE


def test_budget_never_evicts_what_a_model_needs_and_says_why(tmp_path: Path) -> None:
    a, b, _ = _three(tmp_path)
    one = _size(a)
    root = tmp_path / "node"
    cluster = FakeCluster([model("a", a)])
    agent, _ = make_agent(root, cluster, budget=one + one // 2)
    agent.run_pass()
    cluster.models = [model("a", a), model("b", b)]
    agent.run_pass()
    entry = cluster.report().checkpoints[cache_key(b)]
    assert entry.state == CheckpointState.WAITING
    assert f"size budget ({one + one // 2} bytes)" in entry.message
    used = cluster.report().used_bytes  # a's files and its bookkeeping
    assert used >= one
    assert f"{used} bytes used, {one} more needed" in entry.message
    assert [p.name for p in root.iterdir()] == [cache_key(a)]


def test_a_model_for_other_nodes_is_ignored(tmp_path: Path) -> None:
    uri = write_model(tmp_path / "store")
    cluster = FakeCluster([model("m", uri, labels=GPU)], labels={"pool": "cpu"})
    agent, _ = make_agent(tmp_path / "node", cluster)
    agent.run_pass()
    assert not (tmp_path / "node").exists() or list((tmp_path / "node").iterdir()) == []
    assert cluster.report().checkpoints == {}
    cluster.labels = {**GPU, "pool": "gpu"}
    agent.run_pass()
    assert cluster.report().checkpoints[cache_key(uri)].state == CheckpointState.COMPLETE


def test_a_failing_store_fails_its_checkpoint_only(tmp_path: Path) -> None:
    good = write_model(tmp_path / "store")
    missing = (tmp_path / "nowhere").as_uri()
    secretive = "s3://bucket-x/model"
    cluster = FakeCluster(
        [model("bad", missing), model("good", good), model("s", secretive, secret="gone")]
    )
    agent, _ = make_agent(tmp_path / "node", cluster)
    agent.run_pass()
    report = cluster.report()
    bad = report.checkpoints[cache_key(missing)]
    assert bad.state == CheckpointState.FAILED
    assert "no such directory" in bad.message
    assert "ns/bad" not in bad.message  # shown to every model with the URI: names none
    secret_message = report.checkpoints[cache_key(secretive)].message
    assert "a model's credentialsSecret: not found" in secret_message
    assert "gone" not in secret_message
    assert report.checkpoints[cache_key(good)].state == CheckpointState.COMPLETE


def test_the_loop_survives_a_failing_api(tmp_path: Path) -> None:
    uri = write_model(tmp_path / "store")

    class Flaky(FakeCluster):
        calls = 0

        def list_models(self) -> list[dict[str, object]]:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError("the API server is away")
            return super().list_models()

        def write_report(self, *args: Any) -> bool:
            agent.stopping.set()  # the loop ends after this pass
            return super().write_report(*args)

    cluster = Flaky([model("m", uri)])
    agent, _ = make_agent(tmp_path / "node", cluster)
    agent.settings = agent.settings.__class__(**{**agent.settings.__dict__, "resync_s": 0.01})
    agent.run()
    assert cluster.calls == 2
    assert cluster.report().checkpoints[cache_key(uri)].state == CheckpointState.COMPLETE


def test_the_secrets_values_are_never_written(tmp_path: Path) -> None:
    uri = write_model(tmp_path / "store")
    values = {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLESECRETID1",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-very-secret-value",
        "HF_TOKEN": "hf_tokenvalue_never_on_disk",
    }
    cluster = FakeCluster([model("m", uri, secret="creds")])
    cluster.add_secret("ns", "creds", values)
    agent, _ = make_agent(tmp_path / "node", cluster)
    agent.run_pass()
    assert cluster.secret_reads == 1
    assert cluster.report().checkpoints[cache_key(uri)].state == CheckpointState.COMPLETE
    written = [p.read_bytes() for p in (tmp_path / "node").rglob("*") if p.is_file()]
    written += [t.encode() for t in cluster.reports.values()]
    assert written
    for value in values.values():
        assert not any(value.encode() in blob for blob in written)
