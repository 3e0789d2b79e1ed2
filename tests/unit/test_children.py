"""The objects a model owns beside its RayService: the token Secret created once with a fresh
random token (an existing one is kept), the NetworkPolicy applied, replaced RayClusters deleted
(one already gone is fine), and API refusals mapped like the RayService's."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import kopf
import pytest
from kubernetes.client.exceptions import ApiException

from ridgeline.api.inference_model import InferenceModelStatus
from ridgeline.controller import Decision, Result
from ridgeline_operator import children

SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "m-ray-token", "namespace": "ns"},
}
POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "m-ray", "namespace": "ns"},
}


class _Api:
    def __init__(self, status: int | None = None) -> None:
        self.status = status
        self.calls: list[tuple[str, Any]] = []

    def _maybe_fail(self) -> None:
        if self.status:
            raise ApiException(status=self.status, reason="x")

    def create_namespaced_secret(self, namespace: str, body: Any, **_: Any) -> None:
        self.calls.append(("secret", body))
        self._maybe_fail()

    def patch_namespaced_network_policy(self, **kwargs: Any) -> None:
        self.calls.append(("policy", kwargs["body"]))
        self._maybe_fail()

    def delete_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("delete", args[4]))
        self._maybe_fail()


def _patch(monkeypatch: pytest.MonkeyPatch, api: _Api) -> None:
    for name in ("CoreV1Api", "NetworkingV1Api", "CustomObjectsApi"):
        monkeypatch.setattr(children.client, name, lambda _api, a=api: a)


def _decision() -> Decision:
    return Decision(
        status=InferenceModelStatus(),
        result=Result.APPLIED,
        apply={},
        token_secret=dict(SECRET),
        owned=[dict(POLICY)],
        replace_clusters=["m-abcde"],
    )


def test_token_secret_gets_a_fresh_random_token_then_the_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokens = []
    for _ in range(2):
        api = _Api()
        _patch(monkeypatch, api)
        children.before_apply(None, _decision())  # type: ignore[arg-type]
        (kind, secret), (kind2, policy) = api.calls
        assert (kind, kind2) == ("secret", "policy")
        assert policy == POLICY
        tokens.append(secret["stringData"]["auth_token"])
    assert len(tokens[0]) >= 32
    assert tokens[0] != tokens[1]
    assert "stringData" not in SECRET  # the rendered manifest never holds the token


def test_an_existing_token_secret_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    api = _Api(status=409)
    _patch(monkeypatch, api)
    children.before_apply(None, replace(_decision(), owned=[]))  # type: ignore[arg-type]


def test_a_replaced_cluster_already_gone_is_fine_and_a_refusal_is_permanent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gone = _Api(status=404)
    _patch(monkeypatch, gone)
    children.after_apply(None, _decision(), "ns")  # type: ignore[arg-type]
    assert gone.calls == [("delete", "m-abcde")]
    refused = _Api(status=403)
    _patch(monkeypatch, refused)
    with pytest.raises(kopf.PermanentError, match="delete RayCluster ns/m-abcde"):
        children.after_apply(None, _decision(), "ns")  # type: ignore[arg-type]
    with pytest.raises(kopf.PermanentError, match="create Secret ns/m-ray-token"):
        children.before_apply(None, _decision())  # type: ignore[arg-type]
