"""``s3://bucket/prefix`` on any S3-compatible endpoint, and ``gs://`` through Google Cloud
Storage's S3-compatible XML API (HMAC keys).

Credentials come from the environment the way boto3 reads them (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION); the operator mounts the InferenceModel's
``credentialsSecret`` as such variables. For ``gs://`` they are a GCS HMAC key (Cloud Storage >
Settings > Interoperability); a service-account JSON key is not read, and a Secret that offers
only one gets an error that says so rather than an anonymous request.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from ridgeline.storage.base import CHUNK_BYTES, ObjectInfo, StorageError

GCS_XML_ENDPOINT = "https://storage.googleapis.com"


class S3Store:
    def __init__(self, scheme: str, bucket: str, prefix: str, client: Any | None = None) -> None:
        self._scheme = scheme
        self._bucket = bucket
        self._prefix = prefix.strip("/")
        self._client = client or s3_client(scheme)

    @property
    def root_uri(self) -> str:
        sep = "/" if self._prefix else ""
        return f"{self._scheme}://{self._bucket}{sep}{self._prefix}"

    def _key(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    def _fail(self, key: str, exc: Exception) -> StorageError:
        return StorageError(f"{self.root_uri}/{key}: {_describe(exc)}")

    def stat(self, key: str) -> ObjectInfo:
        try:
            head = self._client.head_object(Bucket=self._bucket, Key=self._key(key))
        except Exception as exc:
            raise self._fail(key, exc) from exc
        return ObjectInfo(
            key=key,
            size_bytes=int(head["ContentLength"]),
            version=str(head.get("ETag", "")).strip('"'),
        )

    def list(self) -> list[ObjectInfo]:
        prefix = f"{self._prefix}/" if self._prefix else ""
        out = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=prefix
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(prefix) :]
                    if key and not key.endswith("/"):
                        out.append(
                            ObjectInfo(
                                key=key,
                                size_bytes=int(obj["Size"]),
                                version=str(obj.get("ETag", "")).strip('"'),
                            )
                        )
        except Exception as exc:
            raise StorageError(f"{self.root_uri}: cannot list: {_describe(exc)}") from exc
        if not out:
            raise StorageError(f"{self.root_uri}: no objects under this prefix")
        return sorted(out, key=lambda o: o.key)

    def read_range(self, key: str, start: int, length: int, if_version: str | None = None) -> bytes:
        return b"".join(self.iter_range(key, start, length, if_version))

    def iter_range(
        self, key: str, start: int, length: int, if_version: str | None = None
    ) -> Iterator[bytes]:
        if length <= 0:
            return
        extra = {"IfMatch": f'"{if_version}"'} if if_version else {}
        try:
            body = self._client.get_object(
                Bucket=self._bucket,
                Key=self._key(key),
                Range=f"bytes={start}-{start + length - 1}",
                **extra,
            )["Body"]
            yield from body.iter_chunks(CHUNK_BYTES)
        except StorageError:
            raise
        except Exception as exc:
            raise self._fail(key, exc) from exc

    def read(self, key: str) -> bytes:
        try:
            data: bytes = self._client.get_object(Bucket=self._bucket, Key=self._key(key))[
                "Body"
            ].read()
        except Exception as exc:
            raise self._fail(key, exc) from exc
        return data


SERVICE_ACCOUNT_VARS = ("GOOGLE_APPLICATION_CREDENTIALS_JSON", "GOOGLE_APPLICATION_CREDENTIALS")


def _check_gcs_credentials(env: Mapping[str, str]) -> None:
    offered = [v for v in SERVICE_ACCOUNT_VARS if env.get(v)]
    if offered and not env.get("AWS_ACCESS_KEY_ID"):
        raise StorageError(
            f"gs:// reads use a GCS HMAC key as AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; "
            f"{offered[0]} (a service-account key) is not supported: create an HMAC key for the "
            "service account and put it in the credentials Secret"
        )


def s3_client(scheme: str, creds: Mapping[str, str] | None = None) -> Any:
    """The one S3 client builder (``s3://`` and ``gs://``): from the process environment as boto3
    reads it (serving pods, ``ridgeline serve``), or from ``creds`` alone (the operator reading a
    model's credentialsSecret: nothing of its own environment or files mixes in).

    Retries: 5 attempts in adaptive mode, the weight download's, kept over the operator's former
    3 in standard mode: adaptive mode also slows the client when the store throttles (503
    SlowDown), which parallel ranged GETs meet first, and a shape read retried twice more costs
    seconds at most."""
    env: Mapping[str, str] = os.environ if creds is None else creds
    if scheme == "gs":
        _check_gcs_credentials(env)
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise StorageError(f"{scheme}:// needs boto3: pip install 'ridgeline[storage]'") from exc
    kwargs: dict[str, Any] = {
        "config": Config(
            retries={"max_attempts": 5, "mode": "adaptive"},
            max_pool_connections=32,
            connect_timeout=5,
            read_timeout=60,
        ),
        "region_name": env.get("AWS_REGION", env.get("AWS_DEFAULT_REGION", "us-east-1")),
    }
    if scheme == "gs":
        kwargs["endpoint_url"] = env.get("GCS_ENDPOINT_URL", GCS_XML_ENDPOINT)
    elif creds is not None and creds.get("AWS_ENDPOINT_URL"):
        kwargs["endpoint_url"] = creds["AWS_ENDPOINT_URL"]  # from the environment boto3 reads it
    if creds is None:
        # a session of its own: boto3's default session keeps the first credentials it
        # resolved, so a later change of the environment would never be seen
        return boto3.session.Session().client("s3", **kwargs)
    session = boto3.session.Session(
        aws_access_key_id=creds.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=creds.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=creds.get("AWS_SESSION_TOKEN"),
    )
    return session.client("s3", **kwargs)


def _describe(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        err = response.get("Error", {})
        code = err.get("Code", "")
        if code in ("404", "NoSuchKey", "NotFound"):
            return "no such object"
        if code in ("412", "PreconditionFailed"):
            return "the object changed during the download (ETag no longer matches); retry"
        if code == "NoSuchBucket":
            return "no such bucket"
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"access denied ({code}): check the credentials secret"
        return f"{code}: {err.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"
