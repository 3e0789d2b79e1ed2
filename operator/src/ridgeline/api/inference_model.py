"""``InferenceModel`` spec and status.

Every cross-field rule lives twice on purpose: as a pydantic validator (so ``ridgeline plan``
refuses what the API server would) and as a CEL rule in ``x-kubernetes-validations`` (so the
API server refuses it before the operator sees it). tests/unit/test_crd.py keeps them in step.
Over 300 lines for that reason: a validator and its CEL rule sit side by side.
"""

from __future__ import annotations

import enum
import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.config import JsonDict

from ridgeline.api.base import ApiModel
from ridgeline.api.node_cache import WeightsStatus
from ridgeline.api.plan import Plan

GROUP = "ridgeline.dev"
VERSION = "v1alpha1"
KIND = "InferenceModel"
PLURAL = "inferencemodels"

_URI_RULES: list[tuple[str, str]] = [
    # (CEL, equivalent Python regex on the whole string)
    (
        "self.uri.matches('^(s3|gs)://[a-z0-9][a-z0-9.-]{1,62}(/.*)?$')",
        r"(s3|gs)://[a-z0-9][a-z0-9.-]{1,62}(/.*)?",
    ),
    (
        "self.uri.matches('^hf://[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(@[A-Za-z0-9_./-]+)?$')",
        r"hf://[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(@[A-Za-z0-9_./-]+)?",
    ),
    ("self.uri.matches('^file:///.+$')", r"file:///.+"),
]
SLO_MESSAGE = "slo applies to mode: online only; batch mode has no latency objective"
TYPICAL_MESSAGE = "typicalPromptTokens + typicalOutputTokens must not exceed maxContextTokens"
# KubeRay names the RayService after the InferenceModel and refuses names that are not a
# DNS-1035 label of at most 47 characters (ray-operator utils/validation.go,
# MaxRayServiceNameLength: 53 for the cluster's "-serve-svc" Service, less the 6 characters of
# the generated RayCluster suffix).
MAX_NAME_LENGTH = 47
NAME_PATTERN = r"[a-z]([-a-z0-9]*[a-z0-9])?"
NAME_RULE = (
    f"self.metadata.name.size() <= {MAX_NAME_LENGTH} && "
    f"self.metadata.name.matches('^{NAME_PATTERN}$')"
)
NAME_MESSAGE = (
    f"metadata.name must be at most {MAX_NAME_LENGTH} characters of lowercase letters, digits "
    "and '-', starting with a letter and ending with a letter or digit (a DNS-1035 label, "
    "which KubeRay requires of the RayService named after the model): write "
    "llama-3-1-8b, not llama-3.1-8b"
)
URI_MESSAGE = (
    "model.uri must be s3://bucket/prefix, gs://bucket/prefix, hf://org/name[@revision] "
    "or file:///absolute/path"
)


def _cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    out: JsonDict = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


class Quantization(enum.StrEnum):
    NONE = "none"
    INT8 = "int8"
    NF4 = "nf4"


class WorkloadMode(enum.StrEnum):
    ONLINE = "online"
    BATCH = "batch"


class ModelSource(ApiModel):
    """Where the weights are: a Hugging Face-style directory (config.json, tokenizer files and
    safetensors weights). Weights are pulled by the serving pods at start, never baked into
    images."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(" || ".join(r for r, _ in _URI_RULES), URI_MESSAGE, field_path=".uri"),
                _cel(
                    "!has(self.credentialsSecret) || !self.uri.startsWith('file://')",
                    "credentialsSecret applies to s3://, gs:// and hf:// only",
                    field_path=".credentialsSecret",
                ),
            ]
        }
    )

    uri: str = Field(
        min_length=6,
        max_length=1024,
        description="Model root: s3://bucket/prefix (any S3-compatible endpoint), "
        "gs://bucket/prefix, hf://org/name[@revision], or file:///path (a local directory or a "
        "mounted volume).",
    )
    credentials_secret: str | None = Field(
        default=None,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Name of a Secret in the same namespace with the store's credentials as "
        "environment variables: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and optionally "
        "AWS_ENDPOINT_URL, AWS_REGION) for s3://; a GCS HMAC key in the same two variables for "
        "gs:// (service-account JSON keys are not supported); HF_TOKEN for hf://. Referenced by "
        "the pods, never copied.",
    )
    sha256_manifest: str | None = Field(
        default=None,
        max_length=1024,
        description="Optional key, relative to uri, of a sha256sum-style manifest; the serving "
        "pods check every downloaded file against it.",
    )

    @model_validator(mode="after")
    def _check(self) -> ModelSource:
        if not any(re.fullmatch(py, self.uri) for _, py in _URI_RULES):
            raise ValueError(URI_MESSAGE)
        if self.credentials_secret and self.uri.startswith("file://"):
            raise ValueError("credentialsSecret applies to s3://, gs:// and hf:// only")
        return self


class Slo(ApiModel):
    """Latency objectives for online serving."""

    time_per_output_token_ms: float = Field(
        gt=0,
        le=10_000,
        description="Largest acceptable decode step time, in milliseconds per output token. "
        "Caps the batch: a larger batch means a longer step.",
    )


class Workload(ApiModel):
    """How the model is used: sets the batch the planner aims for."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.mode == 'online' || !has(self.slo)",
                    SLO_MESSAGE,
                    field_path=".slo",
                ),
                _cel(
                    "(has(self.typicalPromptTokens) ? self.typicalPromptTokens : 0) + "
                    "(has(self.typicalOutputTokens) ? self.typicalOutputTokens : 1) "
                    "<= self.maxContextTokens",
                    TYPICAL_MESSAGE,
                ),
            ]
        }
    )

    mode: WorkloadMode = Field(
        default=WorkloadMode.ONLINE,
        description="online: the knee of the throughput curve (the smallest batch reaching "
        "90% of what a replica can deliver), capped by the SLO. batch: the knee, for "
        "throughput.",
    )
    max_context_tokens: int = Field(
        default=4096,
        ge=16,
        le=1_048_576,
        description="Prompt plus output tokens per sequence. Sizes the KV cache; longer "
        "prompts are refused with HTTP 400.",
    )
    typical_prompt_tokens: int | None = Field(
        default=None,
        ge=0,
        le=1_048_576,
        description="Typical prompt length in tokens. Sets the predicted step time (the KV "
        "cache a step reads), not the memory, which is sized at maxContextTokens. Default: a "
        "quarter of maxContextTokens (at most what typicalOutputTokens leaves).",
    )
    typical_output_tokens: int | None = Field(
        default=None,
        ge=1,
        le=1_048_576,
        description="Typical number of generated tokens per request; sets the predicted step "
        "time like typicalPromptTokens. Default: half of maxContextTokens (at most what "
        "typicalPromptTokens leaves).",
    )
    slo: Slo | None = Field(default=None, description="Latency objective (online mode only).")

    @model_validator(mode="after")
    def _check(self) -> Workload:
        if self.slo is not None and self.mode is not WorkloadMode.ONLINE:
            raise ValueError(SLO_MESSAGE)
        prompt = self.typical_prompt_tokens or 0
        output = self.typical_output_tokens or 1
        if prompt + output > self.max_context_tokens:
            raise ValueError(f"{TYPICAL_MESSAGE} ({prompt} + {output} > {self.max_context_tokens})")
        return self

    @property
    def prompt_tokens(self) -> int:
        """The typical prompt, or its default: a quarter of the context window."""
        if self.typical_prompt_tokens is not None:
            return self.typical_prompt_tokens
        return min(self.max_context_tokens // 4, self.max_context_tokens - self.output_tokens)

    @property
    def output_tokens(self) -> int:
        """The typical output, or its default: half of the context window."""
        if self.typical_output_tokens is not None:
            return self.typical_output_tokens
        room = self.max_context_tokens - (self.typical_prompt_tokens or 0)
        return max(1, min(self.max_context_tokens // 2, room))


# Idle time before Serve removes a replica; then Ray's autoscaler removes the worker pod left
# without replicas after POD_IDLE_S (KubeRay's idleTimeoutSeconds).
DEFAULT_SCALE_DOWN_DELAY_S = 300
POD_IDLE_S = 60


class Replicas(ApiModel):
    """Ray Serve autoscaling of the model's replicas (one replica = one worker pod)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("self.min <= self.max", "replicas.min must not exceed replicas.max")
            ]
        }
    )

    min: int = Field(
        default=1, ge=0, le=1000, description="Fewest replicas; 0 lets the model scale to zero."
    )
    max: int = Field(default=1, ge=1, le=1000, description="Most replicas.")
    target_ongoing_requests: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Ongoing requests per replica that autoscaling aims for. Defaults to the "
        "planned batch target, the batch one replica serves efficiently.",
    )
    scale_down_delay_seconds: int = Field(
        default=DEFAULT_SCALE_DOWN_DELAY_S,
        ge=0,
        le=86_400,
        description="Seconds a replica stays idle before Ray Serve removes it (to min, and with "
        f"min 0 to zero); its worker pod goes {POD_IDLE_S} s later. A request brings a "
        "replica back from zero (a cold start: pod start, weight pull, load).",
    )

    @model_validator(mode="after")
    def _check(self) -> Replicas:
        if self.min > self.max:
            raise ValueError("replicas.min must not exceed replicas.max")
        return self


class InferenceModelSpec(ApiModel):
    """What to serve and how it is used; Ridgeline works out the GPUs, image and batch."""

    model: ModelSource = Field(description="Where the weights are.")
    quantization: Quantization = Field(
        default=Quantization.NONE,
        description="Weight format in GPU memory: none (16-bit), int8 (bitsandbytes LLM.int8) "
        "or nf4 (bitsandbytes 4-bit NormalFloat with double quantization). Embeddings and "
        "lm_head stay 16-bit. Quantization saves memory; with bitsandbytes it is rarely faster.",
    )
    workload: Workload = Field(
        default_factory=Workload,
        json_schema_extra={"default": Workload().to_api()},  # type: ignore[dict-item]
        description="How the model is used: mode, context, SLO.",
    )
    accelerators: list[str] | None = Field(
        default=None,
        max_length=32,
        description="Optional allow-list of nvidia.com/gpu.product values (case-insensitive), "
        "or 'cpu' for CPU-only pools. CPU pools are used only when listed here.",
    )
    replicas: Replicas = Field(
        default_factory=Replicas,
        json_schema_extra={"default": Replicas().to_api()},  # type: ignore[dict-item]
        description="Autoscaling bounds.",
    )


class Condition(ApiModel):
    """A condition in the Kubernetes convention."""

    type: str = Field(description="Planned, Compatible, Applied, Ready, NodesMatchPool or Cached.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason for the status.")
    message: str = Field(default="", description="Human-readable explanation.")
    observed_generation: int | None = Field(
        default=None, description="metadata.generation this condition was computed for."
    )
    last_transition_time: str | None = Field(
        default=None, description="When status last changed (RFC 3339)."
    )


class Placement(ApiModel):
    """Where and with which image the replicas run."""

    image: str = Field(description="Serving image chosen for the pool's driver.")
    cuda_version: str | None = Field(default=None, description="CUDA version of the image.")
    torch_version: str | None = Field(default=None, description="torch version of the image.")
    min_driver: str | None = Field(
        default=None, description="Lowest NVIDIA driver that runs the image."
    )
    node_pool: str = Field(description="Node pool the worker pods are pinned to.")


class ReplicaStatus(ApiModel):
    """Replica counts observed from the RayService."""

    desired: int = Field(default=0, description="Replicas Ray Serve wants now.")
    ready: int = Field(default=0, description="Replicas serving now.")


class InferenceModelStatus(ApiModel):
    """Recomputed by the operator from what it observes."""

    observed_generation: int | None = Field(
        default=None, description="metadata.generation of the spec this status describes."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Planned, Compatible, Applied, Ready; NodesMatchPool and Cached where they "
        "apply.",
    )
    plan: Plan | None = Field(default=None, description="The sizing and its reasons.")
    placement: Placement | None = Field(default=None, description="Image and node pool.")
    replicas: ReplicaStatus | None = Field(default=None, description="Observed replicas.")
    endpoint: str | None = Field(
        default=None, description="OpenAI-compatible base URL inside the cluster."
    )
    weights: WeightsStatus | None = Field(
        default=None,
        description="Where the checkpoint is cached on the planned pool's nodes: what the node "
        "cache agents fill, and how far they are. Only where the node weight cache is enabled.",
    )


class ObjectMeta(ApiModel):
    model_config = ConfigDict(extra="allow")

    # The API server requires a DNS-1123 subdomain of a custom resource's name; KubeRay, which
    # names the RayService after it, a DNS-1035 label of at most 47 characters. The CRD refuses
    # others (NAME_RULE), so `ridgeline plan`, `render` and `serve` do too.
    name: str = Field(
        min_length=1,
        max_length=253,
        description="Object name: lower-case letters, digits and '-', at most 47 characters.",
    )
    namespace: str | None = Field(default=None, description="Namespace.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if len(value) > MAX_NAME_LENGTH or not re.fullmatch(NAME_PATTERN, value):
            raise ValueError(f"{NAME_MESSAGE} (got {value!r})")
        return value


class InferenceModel(ApiModel):
    """A model to serve: Ridgeline sizes it on the roofline, picks GPUs and a CUDA image that
    the nodes' driver runs, and serves it on KubeRay with an OpenAI-compatible API."""

    api_version: Literal["ridgeline.dev/v1alpha1"] = Field(
        default="ridgeline.dev/v1alpha1", description="ridgeline.dev/v1alpha1"
    )
    kind: Literal["InferenceModel"] = Field(default="InferenceModel", description="InferenceModel")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: InferenceModelSpec = Field(description="Desired state.")
    status: InferenceModelStatus | None = Field(default=None, description="Observed state.")

    @classmethod
    def from_manifest(cls, doc: dict[str, Any]) -> InferenceModel:
        return cls.model_validate(doc)
