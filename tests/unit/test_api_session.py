"""kopf's session to the API server: the kubeconfig's credentials, a bounded connection pool."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import kopf
import pytest

from ridgeline_operator import api_session


def test_login_bounds_the_connection_pool_and_keeps_the_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True},
            }
        ],
        "users": [{"name": "u", "user": {"token": "s3cret"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod
    monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(path))

    async def login() -> tuple[kopf.AiohttpSession, int | None]:
        info = await api_session.login(
            logger=logging.getLogger("test"), settings=kopf.OperatorSettings()
        )
        connector = info.aiohttp_session.connector
        await info.aiohttp_session.close()
        return info, connector.limit if connector else None

    info, limit = asyncio.run(login())
    assert info.server == "https://127.0.0.1:6443"
    assert limit == api_session.API_CONNECTIONS > 0  # kopf's own session: 0, no limit
    assert info.aiohttp_session.headers["Authorization"] == "Bearer s3cret"
