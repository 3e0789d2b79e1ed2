"""Read ``model.yaml`` files: an InferenceModel manifest, validated as the API server would."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from ridgeline.api import InferenceModel
from ridgeline.errors import format_validation_error


class ManifestError(ValueError):
    pass


def load_inference_model(path: Path) -> InferenceModel:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except OSError as exc:
        raise ManifestError(f"{path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from exc
    models = [d for d in docs if isinstance(d, dict) and d.get("kind") == "InferenceModel"]
    if len(models) != 1:
        raise ManifestError(f"{path}: expected one InferenceModel document, found {len(models)}")
    try:
        return InferenceModel.from_manifest(models[0])
    except ValidationError as exc:
        raise ManifestError(
            f"{path}: invalid InferenceModel:\n{format_validation_error(exc)}"
        ) from exc
