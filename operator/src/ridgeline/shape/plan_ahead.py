"""The shape for planning ahead of a download: from the safetensors headers where the root has
them, else estimated from config.json alone (``params_source`` says which).

Only planning does this (`ridgeline plan`, `ridgeline shape`): the operator and `ridgeline
serve` need the weights themselves and keep ``read_model_shape``'s refusal of a root without
safetensors.
"""

from __future__ import annotations

import json

from ridgeline.shape.config_estimate import estimate_model_shape
from ridgeline.shape.model_shape import ModelShape
from ridgeline.shape.reader import CONFIG, NoWeightsError, ShapeError, read_model_shape
from ridgeline.storage import ObjectStore, StorageError, open_store


def read_or_estimate_model_shape(uri_or_store: str | ObjectStore) -> ModelShape:
    try:
        store = open_store(uri_or_store) if isinstance(uri_or_store, str) else uri_or_store
    except StorageError as exc:
        raise ShapeError(str(exc)) from exc
    try:
        return read_model_shape(store)
    except NoWeightsError:
        pass
    where = f"{store.root_uri.rstrip('/')}/{CONFIG}"
    try:
        # read_model_shape has just read and checked it; a second small read keeps the reader
        # free of planning concerns.
        config = json.loads(store.read(CONFIG))
        return estimate_model_shape(config)
    except StorageError as exc:
        raise ShapeError(f"cannot read {CONFIG}: {exc}") from exc
    except ValueError as exc:
        raise ShapeError(f"{where}: cannot estimate the weights: {exc}") from exc
