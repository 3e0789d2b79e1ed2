"""The agent's edge to the API server: the report is written only when it changed, a Secret's
failure names it, and the command refuses to start without its settings."""

from __future__ import annotations

import base64
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ridgeline.api.node_cache import REPORT_KEY, report_labels
from ridgeline.storage.credentials import CredentialsError
from ridgeline_serving.node_cache.__main__ import main
from ridgeline_serving.node_cache.kube import KubeCluster


class FakeCore:
    def __init__(self) -> None:
        self.maps: dict[str, Any] = {}
        self.calls: list[str] = []
        self.secret: Any = None

    def read_namespaced_config_map(self, name: str, namespace: str, **kw: Any) -> Any:
        self.calls.append("read")
        if name not in self.maps:
            raise ApiException(status=404, reason="Not Found")
        return self.maps[name]

    def create_namespaced_config_map(self, namespace: str, body: Any, **kw: Any) -> None:
        self.calls.append("create")
        assert kw["_request_timeout"]
        self.maps[body.metadata.name] = body

    def patch_namespaced_config_map(self, name: str, namespace: str, body: Any, **kw: Any) -> None:
        self.calls.append("patch")
        self.maps[name] = body

    def read_node(self, name: str, **kw: Any) -> Any:
        meta = client.V1ObjectMeta(name=name, uid="uid-" + name, labels={"pool": "a"})
        return client.V1Node(metadata=meta)

    def read_namespaced_secret(self, name: str, namespace: str, **kw: Any) -> Any:
        if self.secret is None:
            raise ApiException(status=403, reason="Forbidden")
        return self.secret


def _cluster() -> tuple[KubeCluster, FakeCore]:
    cluster = KubeCluster(client.ApiClient())
    core = FakeCore()
    cluster._core = core  # type: ignore[assignment]
    return cluster, core


def test_the_report_is_written_only_when_it_changed() -> None:
    cluster, core = _cluster()
    labels = report_labels("node-1")
    assert cluster.write_report("ns", "r", labels, '{"a": 1}')
    assert not cluster.write_report("ns", "r", labels, '{"a": 1}')
    assert cluster.write_report("ns", "r", labels, '{"a": 2}')
    assert core.calls == ["read", "create", "read", "read", "patch"]
    assert core.maps["r"].data == {REPORT_KEY: '{"a": 2}'}
    assert core.maps["r"].metadata.labels["app.kubernetes.io/component"] == "node-cache-report"


def test_the_report_is_owned_by_the_agents_node_and_goes_with_it() -> None:
    """The garbage collector deletes a dependent whose owner is gone: a deleted node's report
    does not keep counting its copies. A report written before the node was read gains it."""
    cluster, core = _cluster()
    labels = report_labels("node-1")
    cluster.write_report("ns", "r", labels, "{}")
    assert not core.maps["r"].metadata.owner_references
    assert cluster.node_labels("node-1") == {"pool": "a"}
    assert cluster.write_report("ns", "r", labels, "{}")
    (owner,) = core.maps["r"].metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("Node", "node-1", "uid-node-1")
    assert not cluster.write_report("ns", "r", labels, "{}")


def test_a_secret_the_agent_may_not_read_is_named() -> None:
    cluster, core = _cluster()
    with pytest.raises(CredentialsError, match="ns/creds: the node cache agent may not read it"):
        cluster.read_credentials("ns", "creds")
    core.secret = SimpleNamespace(data={"HF_TOKEN": base64.b64encode(b"hf_x").decode()})
    assert cluster.read_credentials("ns", "creds") == {"HF_TOKEN": "hf_x"}


def test_main_refuses_to_start_without_its_node(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    monkeypatch.setenv("RIDGELINE_NODE_CACHE_NAMESPACE", "ns")
    assert main(["--once"]) == 2
    assert "NODE_NAME is not set" in capsys.readouterr().err
