"""Session fixtures for the control-plane tier: one loopback cluster for the whole run."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ridgeline.config_files import load_pools
from ridgeline_dev import fleet
from ridgeline_dev.cluster import ClusterState, down, dump_logs, kubectl, up

HERE = Path(__file__).parent

STATE_KEY = pytest.StashKey[ClusterState]()


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterState]:
    workdir: Path = tmp_path_factory.mktemp("cluster")
    try:
        state = up(workdir)
    except Exception:
        logs = workdir / "logs"
        for log in sorted(logs.glob("*.log")):
            print(f"===== {log.name}\n{log.read_text(errors='replace')[-4000:]}")
        down(workdir)
        raise
    request.config.stash[STATE_KEY] = state
    yield state
    down(workdir)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    state = item.config.stash.get(STATE_KEY, None)
    if report.failed and state is not None and "cluster" in getattr(item, "fixturenames", ()):
        report.sections.append(("control-plane logs", dump_logs(state)))


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def get_json(state: ClusterState, *args: str) -> Any:
    return json.loads(kubectl(state, "get", "-o", "json", *args).stdout)


def kubectl_path(state: ClusterState) -> str:
    return str(Path(state.commands["kube-apiserver"]).with_name("kubectl"))


@pytest.fixture(scope="session")
def fake_fleet(cluster: ClusterState) -> list[str]:
    """The GPU fleet of pools-e2e.yaml, Ready."""
    names = fleet.apply(
        load_pools(HERE / "pools-e2e.yaml"),
        [kubectl_path(cluster), "--kubeconfig", cluster.kubeconfig],
    )

    def all_ready() -> bool:
        return all(
            any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n["status"].get("conditions", [])
            )
            for n in get_json(cluster, "nodes")["items"]
        )

    wait_for("fake nodes Ready", all_ready)
    return names
