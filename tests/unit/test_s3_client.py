"""One S3 client builder: the operator (a model's credentialsSecret) and the serving pods (their
environment) get the same retries and timeouts, and the operator's client reads the Secret
alone, never the operator's own environment."""

from __future__ import annotations

from typing import Any

import pytest

from ridgeline.storage.s3 import GCS_XML_ENDPOINT, s3_client
from ridgeline_operator.credentials import store_with

SECRET = {
    "AWS_ACCESS_KEY_ID": "from-secret",
    "AWS_SECRET_ACCESS_KEY": "secret-value",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    "AWS_REGION": "eu-west-1",
}


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-environment")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "environment-value")
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


def _operator_client(uri: str) -> Any:
    return store_with(uri, SECRET)._client  # type: ignore[attr-defined]


def _settings(client: Any) -> tuple[object, ...]:
    config = client.meta.config
    return (config.retries, config.connect_timeout, config.read_timeout)


def test_the_operator_and_the_pods_retry_alike() -> None:
    pods = s3_client("s3")
    assert _settings(_operator_client("s3://bucket/m")) == _settings(pods)
    assert pods.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 6}


def test_the_operator_reads_with_the_secret_alone() -> None:
    client = _operator_client("s3://bucket/m")
    assert client._request_signer._credentials.access_key == "from-secret"
    assert client.meta.endpoint_url == SECRET["AWS_ENDPOINT_URL"]
    assert client.meta.region_name == "eu-west-1"
    pods = s3_client("s3")
    assert pods._request_signer._credentials.access_key == "from-environment"
    assert pods.meta.region_name == "us-west-2"


def test_gs_goes_to_the_xml_endpoint_either_way() -> None:
    assert _operator_client("gs://bucket/m").meta.endpoint_url == GCS_XML_ENDPOINT
    assert s3_client("gs").meta.endpoint_url == GCS_XML_ENDPOINT


def test_the_pods_client_reads_the_environment_as_it_is_now(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """boto3's default session keeps the first credentials it resolved: a client built after the
    environment changed must not sign with the old ones (a full test run made the MinIO
    credentials of an earlier test stick)."""
    s3_client("s3")._request_signer._credentials.access_key  # noqa: B018  # resolves them
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "changed")
    assert s3_client("s3")._request_signer._credentials.access_key == "changed"
