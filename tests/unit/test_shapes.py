"""The operator's shape cache: a model read with its own credentials, every failure a message
for ModelUnreadable (remembered briefly, never retried hot), the last good shape kept through a
storage blip. The credential values never appear in a message."""

from __future__ import annotations

import base64
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from ridgeline.shape import ModelShape
from ridgeline_operator import credentials, shapes
from ridgeline_operator.credentials import CredentialsError, read_credentials, store_with
from ridgeline_operator.shapes import ShapeCache

SECRET = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value"}


def test_a_private_model_is_read_with_its_own_secret(
    shape_of, monkeypatch: pytest.MonkeyPatch
) -> None:
    shape = shape_of("tiny-llama")
    asked: list[tuple[str, str]] = []
    stores: list[tuple[str, dict[str, str]]] = []

    def reader(namespace: str, name: str) -> dict[str, str]:
        asked.append((namespace, name))
        return dict(SECRET)

    def fake_store(uri: str, creds: dict[str, str]) -> str:
        stores.append((uri, creds))
        return "store"

    monkeypatch.setattr(shapes, "store_with", fake_store)
    monkeypatch.setattr(shapes, "read_model_shape", lambda store: shape)
    cache = ShapeCache(credentials=reader)
    assert cache.get("s3://models/m", "team-a", "creds") == (shape, None)
    assert asked == [("team-a", "creds")]
    assert stores == [("s3://models/m", SECRET)]
    cache.get("s3://models/m", "team-a", "creds")
    assert len(asked) == 1  # cached
    cache.get("s3://models/m", "team-b", "creds")
    assert asked[-1] == ("team-b", "creds")  # another namespace's secret, another entry


@pytest.mark.parametrize(
    "failure",
    [
        CredentialsError("credentialsSecret ns/creds: not found"),
        TypeError("dtype must be a string"),
        ZeroDivisionError("division by zero"),
        RecursionError("maximum recursion depth exceeded"),
    ],
)
def test_every_failure_is_a_message_remembered_briefly(
    failure: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def broken(store: Any) -> ModelShape:
        calls.append("read")
        raise failure

    monkeypatch.setattr(shapes, "read_model_shape", broken)
    cache = ShapeCache(failure_ttl_s=60)
    shape, error = cache.get("s3://models/m")
    assert shape is None
    assert error is not None
    assert str(failure) in error
    cache.get("s3://models/m")
    assert calls == ["read"]  # not re-read at every resync


def test_last_good_shape_survives_a_storage_blip(shape_of, monkeypatch: pytest.MonkeyPatch) -> None:
    shape = shape_of("tiny-llama")
    monkeypatch.setattr(shapes, "read_model_shape", lambda store: shape)
    cache = ShapeCache(ttl_s=0)
    assert cache.get("s3://models/m")[0] is shape

    def down(store: Any) -> ModelShape:
        raise OSError("connection refused")

    monkeypatch.setattr(shapes, "read_model_shape", down)
    assert cache.get("s3://models/m") == (shape, None)


class _Core:
    def __init__(self, secret: Any = None, status: int | None = None) -> None:
        self.secret, self.status = secret, status

    def read_namespaced_secret(self, name: str, namespace: str, **_: Any) -> Any:
        if self.status:
            raise ApiException(status=self.status, reason="x")
        return self.secret


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def test_secret_values_are_decoded_and_never_in_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    data = {k: _b64(v) for k, v in SECRET.items()} | {"unrelated": _b64("x")}
    monkeypatch.setattr(
        credentials.client, "CoreV1Api", lambda api: _Core(SimpleNamespace(data=data))
    )
    assert read_credentials(None, "ns", "creds") == SECRET  # type: ignore[arg-type]
    for status, why in ((404, "not found"), (403, "RBAC")):
        monkeypatch.setattr(credentials.client, "CoreV1Api", lambda api, s=status: _Core(status=s))
        with pytest.raises(CredentialsError, match=why):
            read_credentials(None, "ns", "creds")  # type: ignore[arg-type]
    empty = SimpleNamespace(data={"password": _b64("s3cr3t-value")})
    monkeypatch.setattr(credentials.client, "CoreV1Api", lambda api: _Core(empty))
    with pytest.raises(CredentialsError) as info:
        read_credentials(None, "ns", "creds")  # type: ignore[arg-type]
    assert "s3cr3t" not in str(info.value)


def test_s3_store_uses_the_secret_not_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "operator-own")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "operator-own")
    store: Any = store_with(
        "s3://bucket/prefix", {**SECRET, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    )
    creds = store._client._request_signer._credentials
    assert (creds.access_key, creds.secret_key) == ("AKIAEXAMPLE", "s3cr3t-value")
    assert store._client.meta.endpoint_url == "http://127.0.0.1:9"
    hf: Any = store_with("hf://org/name", {"HF_TOKEN": "hf_x", "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert (hf._token, hf._endpoint) == ("hf_x", "http://127.0.0.1:9")
