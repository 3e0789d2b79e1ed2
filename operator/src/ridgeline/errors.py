"""Error text for people: pydantic's errors as one line per field, YAML's on one line."""

from __future__ import annotations

import yaml
from pydantic import ValidationError


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def yaml_error_line(exc: yaml.YAMLError) -> str:
    """``line 3, column 7: found character '\\t' that cannot start any token``: PyYAML's own
    text spans several lines and quotes the source."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    if mark is None or problem is None:
        return " ".join(str(exc).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
