"""Listing a shared checkpoint's store: the failure message goes into the Cached condition of
every model with that URI, other tenants' included, so it names no model and no Secret."""

from __future__ import annotations

import pytest

from ridgeline.storage.base import ObjectInfo
from ridgeline_serving.node_cache import listing
from ridgeline_serving.node_cache.decide import ModelRef, Need
from tests.unit.node_cache_fakes import FakeCluster

URI = "s3://bucket/m"


class _Denied:
    def list(self) -> list[ObjectInfo]:
        raise RuntimeError(f"{URI}: AccessDenied")


def test_the_message_names_no_model_and_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listing, "open_store", lambda uri: _Denied())
    need = Need(
        "d",
        URI,
        10,
        (ModelRef("tenant-a", "alpha", "alpha-keys"), ModelRef("tenant-b", "beta")),
    )
    with pytest.raises(listing.ListingError) as raised:
        listing.list_checkpoint(need, FakeCluster([]))
    message = str(raised.value)
    for name in ("tenant-a", "alpha", "tenant-b", "beta"):
        assert name not in message
    assert message == (
        f"none of the 2 models' credentials could list it; the last error: {URI}: AccessDenied"
    )


def test_an_unreadable_secret_says_why_without_its_name() -> None:
    need = Need("d", URI, 10, (ModelRef("tenant-a", "alpha", "alpha-keys"),))
    with pytest.raises(listing.ListingError) as raised:
        listing.list_checkpoint(need, FakeCluster([]))
    assert str(raised.value) == (
        "the model's credentials could not list it: a model's credentialsSecret: not found"
    )
