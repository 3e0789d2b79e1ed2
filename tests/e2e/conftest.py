"""Session fixtures for the control-plane tier: one loopback cluster for the whole run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ridgeline_dev.cluster import ClusterState, down, dump_logs, up

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
