"""The core's half of a model's credentials, which the operator and the node cache agent share."""

from __future__ import annotations

import base64

import pytest

import ridgeline_operator.credentials as operator_credentials
from ridgeline.storage.credentials import CredentialsError, decode_secret_data


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_decodes_only_the_storage_keys() -> None:
    data = {"AWS_ACCESS_KEY_ID": _b64("AKIA\n"), "unrelated": _b64("x")}
    assert decode_secret_data("ns", "s", data) == {"AWS_ACCESS_KEY_ID": "AKIA"}


def test_errors_name_the_secret_not_the_values() -> None:
    with pytest.raises(CredentialsError, match="ns/s has none of the keys"):
        decode_secret_data("ns", "s", {"password": _b64("hunter2")})
    with pytest.raises(CredentialsError, match="ns/s: key HF_TOKEN is not UTF-8") as err:
        decode_secret_data("ns", "s", {"HF_TOKEN": base64.b64encode(b"\xff\xfe").decode()})
    assert "\\xff" not in str(err.value)


def test_the_operator_module_keeps_its_names() -> None:
    assert operator_credentials.CredentialsError is CredentialsError
    assert callable(operator_credentials.store_with)
    assert "HF_TOKEN" in operator_credentials.KEYS
