"""Read ``model.yaml`` files: an InferenceModel manifest, validated as the API server would.

Every way a file can be wrong (unreadable, too large, not UTF-8, not YAML, a key given twice,
nested past any real manifest, not exactly one InferenceModel, invalid fields or field types)
is a ManifestError naming the file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ridgeline.api import InferenceModel
from ridgeline.errors import format_validation_error, yaml_error_line
from ridgeline.yamlfile import TooLargeError, load_all, read_capped

# The API server takes a float with no fraction for an integer field (kube-openapi's
# IsFloat64AJSONInteger: within +-2**53), so `maxContextTokens: 2048.0` is fine there.
_JSON_INTEGER_LIMIT = 2.0**53


class ManifestError(ValueError):
    pass


def _read_text(path: Path) -> str:
    try:
        raw = read_capped(path, "manifest")
    except OSError as exc:
        raise ManifestError(f"{path}: {exc.strerror or exc}") from exc
    except TooLargeError as exc:
        raise ManifestError(f"{path}: {exc}") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"{path}: not a text file (invalid UTF-8 at byte {exc.start}); expected model.yaml"
        ) from exc


def _key(key: Any) -> str:
    """A mapping key as the JSON kubectl sends spells it."""
    if isinstance(key, bool):
        return "true" if key else "false"
    return "null" if key is None else str(key)


def as_sent(value: Any, where: str = "") -> Any:
    """The JSON kubectl sends for a parsed YAML value, so that strict validation sees what the
    API server would: strings stay strings (``"2048"`` is no integer there), integral floats
    count as integers, and what JSON cannot hold is refused by its path."""
    if isinstance(value, dict):
        return {
            _key(k): as_sent(v, f"{where}.{_key(k)}" if where else _key(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [as_sent(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where or '(root)'}: {value} is not a JSON number")
        if value.is_integer() and abs(value) <= _JSON_INTEGER_LIMIT:
            return int(value)
        return value
    if isinstance(value, bytes):  # !!binary: go-yaml gives its bytes as a string
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, str | int):
        return value
    raise ValueError(f"{where or '(root)'}: a YAML {type(value).__name__} is not JSON")


def load_inference_model(path: Path) -> InferenceModel:
    text = _read_text(path)
    try:
        docs = [d for d in load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {yaml_error_line(exc)}") from exc
    except RecursionError as exc:
        raise ManifestError(f"{path}: not valid YAML: nested too deeply") from exc
    models = [d for d in docs if isinstance(d, dict) and d.get("kind") == "InferenceModel"]
    if len(models) != 1:
        raise ManifestError(f"{path}: expected one InferenceModel document, found {len(models)}")
    try:
        sent = json.dumps(as_sent(models[0]))
        # Strict, as the CRD's schema is: lax mode would take "2048" for an integer.
        return InferenceModel.model_validate_json(sent, strict=True)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            # The JSON is ours and valid; its parser refuses only depth (over 200 levels).
            raise ManifestError(f"{path}: invalid InferenceModel: nested too deeply") from exc
        raise ManifestError(
            f"{path}: invalid InferenceModel:\n{format_validation_error(exc)}"
        ) from exc
    except ValueError as exc:
        raise ManifestError(f"{path}: invalid InferenceModel: {exc}") from exc
    except RecursionError as exc:
        raise ManifestError(f"{path}: invalid InferenceModel: nested too deeply") from exc
