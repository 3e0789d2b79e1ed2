"""Serving tier (CPU): MinIO on loopback, a tiny model made on the spot, Ray Serve."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ridgeline_dev.s3server import S3Server, running_minio
from ridgeline_dev.tiny_model import upload_dir, write_tiny_model


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_minio(tmp_path_factory.mktemp("minio")) as server:
        saved = {k: os.environ.get(k) for k in server.env()}
        # The storage layer (and Ray workers started after this) read these.
        os.environ.update(server.env())
        yield server
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-chat")


@pytest.fixture(scope="session")
def tiny_uri(s3: S3Server, tiny_dir: Path) -> str:
    return upload_dir(tiny_dir, "models", "tiny-chat", s3.endpoint, s3.access_key, s3.secret_key)


@pytest.fixture
def s3_client(s3: S3Server):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        region_name="us-east-1",
    )
