"""The ``InferenceModel`` API (ridgeline.dev/v1alpha1): pydantic models are the single source;
the CRD in crds/ is generated from them (``make crds``)."""

from ridgeline.api.inference_model import (
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    InferenceModel,
    InferenceModelSpec,
    InferenceModelStatus,
    ModelSource,
    Quantization,
    Replicas,
    Slo,
    Workload,
    WorkloadMode,
)
from ridgeline.api.plan import Bound, Plan, PlanOption, Prediction

__all__ = [
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "Bound",
    "InferenceModel",
    "InferenceModelSpec",
    "InferenceModelStatus",
    "ModelSource",
    "Plan",
    "PlanOption",
    "Prediction",
    "Quantization",
    "Replicas",
    "Slo",
    "Workload",
    "WorkloadMode",
]
