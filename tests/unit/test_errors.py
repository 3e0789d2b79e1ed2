"""One formatter of pydantic's errors: a manifest's error lines and the serving API's 400 name a
field by the same dotted path with the same message."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from ridgeline.errors import format_validation_error, validation_errors


class _Inner(BaseModel):
    top_k: int


class _Outer(BaseModel):
    sampling: _Inner
    n: int


def _error(doc: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        _Outer.model_validate(doc)
    return info.value


def test_fields_are_named_by_their_dotted_path() -> None:
    exc = _error({"sampling": {"top_k": "many"}, "n": "two"})
    assert validation_errors(exc) == [
        ("sampling.top_k", "Input should be a valid integer, unable to parse string as an integer"),
        ("n", "Input should be a valid integer, unable to parse string as an integer"),
    ]
    assert format_validation_error(exc).splitlines() == [
        f"  {where}: {message}" for where, message in validation_errors(exc)
    ]


def test_the_whole_document_has_no_path() -> None:
    exc = _error(["not", "a", "mapping"])
    assert validation_errors(exc)[0][0] is None
    assert format_validation_error(exc).startswith("  (root): ")
