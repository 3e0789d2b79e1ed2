"""The node cache agent against MinIO (S3 ETags, ranged reads conditional on them) with the
model's own credentialsSecret: the agent's environment has none, so the fill works only with
the Secret's; a new object version fills a second directory; no Secret value lands on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ridgeline.api.node_cache import CheckpointState
from ridgeline.storage import node_layout
from ridgeline.storage.download import cache_key
from ridgeline_dev.s3server import S3Server, running_minio
from tests.unit.node_cache_fakes import FakeCluster, make_agent, model, sample

URI = "s3://models/agent-m"
DIRECTORY = cache_key(URI)


@pytest.fixture(scope="module")
def minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_minio(tmp_path_factory.mktemp("minio")) as server:
        yield server


@pytest.fixture
def s3(minio: S3Server, monkeypatch: pytest.MonkeyPatch) -> Any:
    import boto3

    for key in minio.env():  # the agent's own environment knows no credentials
        monkeypatch.delenv(key, raising=False)
    client = boto3.client(
        "s3",
        endpoint_url=minio.endpoint,
        aws_access_key_id=minio.access_key,
        aws_secret_access_key=minio.secret_key,
        region_name="us-east-1",
    )
    if "models" not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket="models")
    client.put_object(Bucket="models", Key="agent-m/config.json", Body=b'{"model_type": "llama"}')
    client.put_object(Bucket="models", Key="agent-m/model.safetensors", Body=b"a" * 70_000)
    return client


def test_fill_with_the_models_secret_then_a_new_version(
    tmp_path: Path, minio: S3Server, s3: Any
) -> None:
    cluster = FakeCluster([model("m", URI, secret="creds")])
    cluster.add_secret("ns", "creds", minio.env())
    agent, clock = make_agent(tmp_path / "node", cluster, grace_s=600)
    agent.run_pass()
    checkpoint = tmp_path / "node" / DIRECTORY
    first = node_layout.read_current(checkpoint)
    assert first is not None
    assert cluster.report().checkpoints[DIRECTORY].state == CheckpointState.COMPLETE
    downloaded = sample(agent, "bytes_downloaded_total", directory=DIRECTORY)
    assert downloaded == first.bytes == 70_000 + len(b'{"model_type": "llama"}')

    agent.run_pass()  # a hit: the same ETags, nothing downloaded
    assert sample(agent, "bytes_downloaded_total", directory=DIRECTORY) == downloaded

    s3.put_object(Bucket="models", Key="agent-m/model.safetensors", Body=b"b" * 70_000)
    agent.run_pass()
    second = node_layout.read_current(checkpoint)
    assert second is not None
    assert second.digest != first.digest
    assert node_layout.digests(checkpoint) == sorted([first.digest, second.digest])
    shard = node_layout.version_dir(checkpoint, second.digest) / "model.safetensors"
    assert shard.read_bytes() == b"b" * 70_000
    assert sample(agent, "bytes_downloaded_total", directory=DIRECTORY) == downloaded + 70_000

    clock.offset = 601
    agent.run_pass()
    assert node_layout.digests(checkpoint) == [second.digest]

    written = [p.read_bytes() for p in (tmp_path / "node").rglob("*") if p.is_file()]
    written += [t.encode() for t in cluster.reports.values()]
    assert not any(minio.secret_key.encode() in blob for blob in written)


def test_wrong_credentials_fail_the_checkpoint_with_the_stores_message(
    tmp_path: Path, minio: S3Server, s3: Any
) -> None:
    cluster = FakeCluster([model("m", URI, secret="creds")])
    cluster.add_secret("ns", "creds", {**minio.env(), "AWS_SECRET_ACCESS_KEY": "wrong-key-value"})
    agent, _ = make_agent(tmp_path / "node", cluster)
    agent.run_pass()
    entry = cluster.report().checkpoints[DIRECTORY]
    assert entry.state == CheckpointState.FAILED
    assert entry.message.startswith(
        "the store could not be listed: the model's credentials could not list it: "
    )
    assert "ns/m" not in entry.message
    assert "creds" not in entry.message
    assert "wrong-key-value" not in entry.message
