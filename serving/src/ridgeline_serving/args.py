"""``ServingArgs``: the contract between the operator (which renders ``serveConfigV2``) and the
serving app. Pydantic only: importable without Ray or torch, so the operator's tests validate
every rendered config against it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ridgeline.api import Quantization

IMPORT_PATH = "ridgeline_serving.app:build_app"


class ServingArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_uri: str = Field(description="Model root (s3://, gs://, hf://, file://).")
    model_name: str = Field(min_length=1, description="Name served in /v1/models.")
    sha256_manifest: str | None = Field(
        default=None, description="Key of a sha256sum manifest under model_uri."
    )
    quantization: Quantization = Quantization.NONE
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    max_batch_size: int = Field(ge=1, le=4096, description="The planned batch target.")
    batch_wait_timeout_s: float = Field(default=0.01, ge=0, le=10)
    max_context_tokens: int = Field(ge=16, description="Prompt + output tokens per sequence.")
    gpus_per_replica: int = Field(ge=0, le=64, description="0 runs on the CPU.")
    max_queued_requests: int | None = Field(
        default=None,
        ge=1,
        description="Requests waiting per replica before 429 (default 4x batch).",
    )
    default_max_tokens: int = Field(default=256, ge=1)
    cache_dir: str = Field(default="/var/cache/ridgeline/models")
    download_parallelism: int = Field(default=8, ge=1, le=128)

    @model_validator(mode="after")
    def _check(self) -> ServingArgs:
        if self.gpus_per_replica == 0 and self.compute_dtype != "float32":
            raise ValueError("CPU replicas (gpus_per_replica: 0) compute in float32")
        return self

    @property
    def queue_limit(self) -> int:
        return self.max_queued_requests or 4 * self.max_batch_size
