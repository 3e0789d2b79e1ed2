"""``ServingArgs``: the contract between the operator (which renders ``serveConfigV2``) and the
serving app, and the Serve deployment options that follow from it. Pydantic only: the core
holds it and the serving app imports it (never the reverse), so both images read one model.

The operator image and the serving image are released separately, so the document is
versioned and everything a replica needs travels in it (no constant crosses by import):

- ``schema_version`` says which release wrote it. Documents without one are version 1.
- A field added later has a default equal to what the earlier release did, so an older
  operator's document loads in a newer serving image.
- A field this image does not know (a newer operator's) is ignored with a warning, so a newer
  operator does not break an older serving image. A field whose meaning changes gets a new
  name instead.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ridgeline.api.inference_model import Quantization

IMPORT_PATH = "ridgeline_serving.app:build_app"
SCHEMA_VERSION = 6
log = logging.getLogger("ridgeline.serving")

# What the allocator can hand out: the CUDA context, cuBLAS workspaces and fragmentation take
# the rest (the 90% that reference section 3c assumes). The planner counts on it; the engine
# caps its memory by it.
USABLE_MEMORY_FRACTION = 0.90
# Prompts are prefilled in chunks of at most this many tokens per step, so the prefill
# activations do not grow with the context (the planner reserves them; the engine schedules so).
PREFILL_CHUNK_TOKENS = 2048
# Requests per replica beyond the batch, as a multiple of it: what a replica holds before 429
# where the document names no queue, and what Serve's router holds per replica before 503.
QUEUE_FACTOR = 4
# Requests Ray Serve lets through beyond batch + queue (health checks, /v1/models).
ONGOING_HEADROOM = 8
# Fields a release stopped reading: still accepted in a document, without the unknown-field
# warning (version 1 operators send batch_wait_timeout_s, unused since version 2).
_RETIRED = frozenset({"batch_wait_timeout_s"})


class ServingArgs(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: int = Field(
        default=1, ge=1, description="The release of this contract that wrote the document."
    )
    model_uri: str = Field(description="Model root (s3://, gs://, hf://, file://).")
    model_name: str = Field(min_length=1, description="Name served in /v1/models.")
    sha256_manifest: str | None = Field(
        default=None, description="Key of a sha256sum manifest under model_uri."
    )
    quantization: Quantization = Quantization.NONE
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    max_batch_size: int = Field(ge=1, le=4096, description="The planned batch target.")
    max_context_tokens: int = Field(ge=16, description="Prompt + output tokens per sequence.")
    gpus_per_replica: int = Field(ge=0, le=64, description="0 runs on the CPU.")
    max_queued_requests: int | None = Field(
        default=None,
        ge=1,
        description=f"Requests waiting per replica before 429 (default {QUEUE_FACTOR}x batch).",
    )
    default_max_tokens: int = Field(default=256, ge=1)
    cache_dir: str = Field(default="/var/cache/ridgeline/models")
    download_parallelism: int = Field(default=8, ge=1, le=128)
    # ---- version 2 -------------------------------------------------------------------------
    max_batch_by_memory: int | None = Field(
        default=None,
        ge=1,
        description="Sequences of max_context_tokens the plan's KV memory holds "
        "(the engine reserves no more); default max_batch_size.",
    )
    prefill_chunk_tokens: int = Field(
        default=PREFILL_CHUNK_TOKENS,
        ge=16,
        description="Prompt tokens per engine step (the planned activations).",
    )
    usable_memory_fraction: float = Field(
        default=USABLE_MEMORY_FRACTION,
        gt=0,
        le=1,
        description="Share of each GPU's memory the plan counts on.",
    )
    num_cpus: float = Field(default=1, ge=0, description="Ray CPUs per replica.")
    ongoing_requests_headroom: int = Field(
        default=ONGOING_HEADROOM,
        ge=0,
        description="Ray Serve requests beyond batch + queue (health, models).",
    )
    # ---- version 3 -------------------------------------------------------------------------
    body_timeout_s: float = Field(
        default=10,
        gt=0,
        le=3600,
        description="A request's whole body must arrive within this time of its first byte "
        "(else 408); it counts against the queue meanwhile.",
    )
    # ---- version 4 -------------------------------------------------------------------------
    planned_step_seconds: float | None = Field(
        default=None,
        gt=0,
        description="The plan's decode step at max_batch_size: the replica's engine log line "
        "sets its measured step beside it (none: the line shows the measured step alone).",
    )
    engine_log_interval_s: float = Field(
        default=10,
        ge=0,
        le=3600,
        description="Seconds between the replica's engine log lines while it works (0: none).",
    )
    # ---- version 5 -------------------------------------------------------------------------
    predicted_cold_start_s: float | None = Field(
        default=None,
        gt=0,
        description="The operator's predicted cold start of a replica (image, weights, load, "
        "Ray's start): what a 503's Retry-After counts down from (none: not predicted).",
    )
    cold_start_wait_s: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="How long a request may wait for a replica that is starting before it is "
        "answered 503 with Retry-After, saying the model is starting (none: it waits).",
    )
    # ---- version 6 -------------------------------------------------------------------------
    node_cache_dir: str | None = Field(
        default=None,
        description="Where the pod mounts its checkpoint's directory of the node weight cache "
        "(read-only; filled by the node cache agent): a replica loads the version it names "
        "when that verifies, else downloads into cache_dir (none: no node cache).",
    )

    @model_validator(mode="before")
    @classmethod
    def _unknown_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(cls.model_fields) - _RETIRED)
            if unknown:
                log.warning(
                    "ServingArgs version %s: ignoring fields this serving image does not know "
                    "(it reads version %d): %s",
                    data.get("schema_version", 1),
                    SCHEMA_VERSION,
                    ", ".join(unknown),
                )
        return data

    @model_validator(mode="after")
    def _check(self) -> ServingArgs:
        if self.gpus_per_replica == 0 and self.compute_dtype != "float32":
            raise ValueError("CPU replicas (gpus_per_replica: 0) compute in float32")
        return self

    @property
    def queue_limit(self) -> int:
        return self.max_queued_requests or QUEUE_FACTOR * self.max_batch_size

    @property
    def kv_sequences(self) -> int:
        return self.max_batch_by_memory or self.max_batch_size

    @property
    def max_ongoing_requests(self) -> int:
        """Ray Serve's per-replica cap: above it, the proxy queues (the replica answers 429
        first, at ``max_batch_size + queue_limit``)."""
        return self.max_batch_size + self.queue_limit + self.ongoing_requests_headroom


def deployment_options(args: ServingArgs, replica_resource: str | None = None) -> dict[str, Any]:
    """Serve's options for the model deployment that follow from the arguments: the cluster's
    render and ``ridgeline serve`` both deploy with these. ``replica_resource`` pins one
    replica per worker pod (a custom Ray resource only the cluster's workers have)."""
    actor: dict[str, Any] = {"num_gpus": args.gpus_per_replica, "num_cpus": args.num_cpus}
    if replica_resource is not None:
        actor["resources"] = {replica_resource: 1}
    return {"max_ongoing_requests": args.max_ongoing_requests, "ray_actor_options": actor}
