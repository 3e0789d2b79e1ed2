"""Error text for people: pydantic's errors as one line per field, YAML's on one line."""

from __future__ import annotations

import yaml
from pydantic import ValidationError


def validation_errors(exc: ValidationError) -> list[tuple[str | None, str]]:
    """Each of pydantic's errors as (the field's dotted path, None for the whole document; its
    message): the files' errors below and the serving API's 400s are written from these."""
    return [(".".join(str(p) for p in err["loc"]) or None, err["msg"]) for err in exc.errors()]


def format_validation_error(exc: ValidationError) -> str:
    """One line per error: ``  spec.replicas.max: Input should be ...``."""
    return "\n".join(f"  {where or '(root)'}: {msg}" for where, msg in validation_errors(exc))


def yaml_error_line(exc: yaml.YAMLError) -> str:
    """``line 3, column 7: found character '\\t' that cannot start any token``: PyYAML's own
    text spans several lines and quotes the source."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    if mark is None or problem is None:
        return " ".join(str(exc).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
