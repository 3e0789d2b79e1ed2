"""Read ``model.yaml`` files: an InferenceModel manifest, validated as the API server would.

Every way a file can be wrong (unreadable, not UTF-8, not YAML, nested past any real manifest,
not exactly one InferenceModel, invalid fields) is a ManifestError naming the file."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from ridgeline.api import InferenceModel
from ridgeline.errors import format_validation_error, yaml_error_line

# A model.yaml is a few hundred bytes, and etcd stores no object over 1.5 MiB.
MAX_BYTES = 1024 * 1024


class ManifestError(ValueError):
    pass


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"{path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_BYTES:
        raise ManifestError(f"{path}: {len(raw)} bytes; a manifest is at most {MAX_BYTES}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"{path}: not a text file (invalid UTF-8 at byte {exc.start}); expected model.yaml"
        ) from exc


def load_inference_model(path: Path) -> InferenceModel:
    text = _read_text(path)
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {yaml_error_line(exc)}") from exc
    except RecursionError as exc:
        raise ManifestError(f"{path}: not valid YAML: nested too deeply") from exc
    models = [d for d in docs if isinstance(d, dict) and d.get("kind") == "InferenceModel"]
    if len(models) != 1:
        raise ManifestError(f"{path}: expected one InferenceModel document, found {len(models)}")
    try:
        return InferenceModel.from_manifest(models[0])
    except ValidationError as exc:
        raise ManifestError(
            f"{path}: invalid InferenceModel:\n{format_validation_error(exc)}"
        ) from exc
    except RecursionError as exc:
        raise ManifestError(f"{path}: invalid InferenceModel: nested too deeply") from exc
