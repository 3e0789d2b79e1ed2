"""`ridgeline serve --host`: which hosts keep Ray on loopback, and where the metrics answer."""

from __future__ import annotations

import pytest

from ridgeline_serving.loopback import is_loopback, metrics_host


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)
    assert metrics_host(host) == "127.0.0.1"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "example.org"])
def test_other_hosts(host: str) -> None:
    assert not is_loopback(host)


def test_metrics_host_for_other_hosts() -> None:
    assert metrics_host("0.0.0.0") == "127.0.0.1"
    assert metrics_host("192.0.2.7") == "192.0.2.7"
    assert metrics_host("2001:db8::1") == "[2001:db8::1]"
