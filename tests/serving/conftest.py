"""Serving tier (CPU): MinIO on loopback, a tiny model made on the spot, Ray Serve."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ridgeline_dev.cluster import free_port
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


@contextmanager
def serve_locally(apps: dict[str, tuple[str, dict[str, Any]]]) -> Iterator[dict[str, str]]:
    """Ray and Serve on this machine with the given apps (name: route prefix, ServingArgs as a
    dict); yields the HTTP base URL and the Prometheus metrics URL."""
    os.environ["RAY_metrics_report_interval_ms"] = "500"  # noqa: SIM112 (Ray spells it so)
    import ray
    from ray import serve

    from ridgeline_serving.app import build_app

    http_port, metrics_port = free_port(), free_port()
    ray.init(
        num_cpus=4, include_dashboard=False, _metrics_export_port=metrics_port, log_to_driver=False
    )
    serve.start(http_options={"host": "127.0.0.1", "port": http_port})
    try:
        for name, (route, args) in apps.items():
            serve.run(build_app(args), name=name, route_prefix=route)
        yield {
            "base": f"http://127.0.0.1:{http_port}",
            "metrics": f"http://127.0.0.1:{metrics_port}/metrics",
        }
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
