"""Serving tier (CPU): MinIO on loopback, a tiny model made on the spot, Ray Serve."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ridgeline_dev.s3server import S3Server, running_minio
from ridgeline_dev.tiny_model import upload_dir, write_tiny_model
from ridgeline_serving.engine import SequenceEvent


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


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module that runs the engine in pytest's own process: two on
    a loaded 2-core machine spin against each other (up to 60x slower)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


class Listener:
    """A sequence's events as the engine sends them; ``done`` is set by the last."""

    def __init__(self) -> None:
        self.events: list[SequenceEvent] = []
        self.done = threading.Event()

    def __call__(self, event: SequenceEvent) -> None:
        self.events.append(event)
        if event.finish is not None:
            self.done.set()

    @property
    def text(self) -> str:
        return "".join(e.delta for e in self.events)

    @property
    def error(self) -> str | None:
        return self.events[-1].error
