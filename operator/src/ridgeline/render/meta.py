"""Labels and owner references shared by every object rendered for an InferenceModel."""

from __future__ import annotations

from typing import Any

from ridgeline.api.inference_model import GROUP, KIND, VERSION, InferenceModel

MODEL_LABEL = "ridgeline.dev/model"


def labels(model: InferenceModel) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "ridgeline-model",
        "app.kubernetes.io/instance": model.metadata.name,
        "app.kubernetes.io/managed-by": "ridgeline",
        MODEL_LABEL: model.metadata.name,
    }


def object_meta(model: InferenceModel, name: str, uid: str | None) -> dict[str, Any]:
    """Name, namespace and labels; owned by the model (garbage-collected with it) given its uid."""
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": model.metadata.namespace,
        "labels": labels(model),
    }
    if uid:
        metadata["ownerReferences"] = [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": model.metadata.name,
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return metadata
