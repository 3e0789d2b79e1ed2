"""``status.plan``: the planner's result, also ``ridgeline plan -o json``.

The JSON is stable: fields are only added, never renamed, within v1alpha1.
"""

from __future__ import annotations

import enum

from pydantic import Field

from ridgeline.api.base import ApiModel


class Bound(enum.StrEnum):
    """What set the batch target."""

    COMPUTE = "compute"  # the knee of the compute roof: past it the step is as long as its math
    BANDWIDTH = "bandwidth"  # the knee of the weight + KV-cache bandwidth roof
    LATENCY = "latency"  # the time-per-output-token SLO stopped it below the knee
    MEMORY = "memory"  # the KV cache for more sequences does not fit


class Prediction(ApiModel):
    """Step-model prediction at the batch target (planner/step_model.py)."""

    tokens_per_second: float = Field(description="Output tokens per second per replica.")
    time_per_output_token_ms: float = Field(
        description="Decode step time at the batch target, in milliseconds."
    )
    tokens_per_second_per_gpu: float = Field(description="tokensPerSecond / gpusPerReplica.")
    plateau_tokens_per_second: float | None = Field(
        default=None,
        description="What an unbounded batch would approach: the compute or KV-bandwidth roof "
        "at the engine's efficiency.",
    )
    price_per_replica_hour: float | None = Field(
        default=None,
        description="A replica's share of its node's pricePerNodeHour (GPUs per replica / GPUs "
        "per node; a CPU replica's node is all its own). Absent when the pool has no price.",
    )
    cost_per_million_tokens: float | None = Field(
        default=None,
        description="pricePerReplicaHour / (tokensPerSecond x 3600) x 10^6: what a million "
        "output tokens cost at the batch target. Absent when the pool has no price.",
    )

    @property
    def step_seconds(self) -> float:
        """The decode step at the batch target, in seconds."""
        return self.time_per_output_token_ms / 1000


class ColdStart(ApiModel):
    """Predicted time from a new worker pod to a replica that answers (not counting a new
    node's boot): image pull, weight download, load, and Ray's own start."""

    seconds: float = Field(description="The sum of the parts below.")
    image_pull_seconds: float = Field(description="Serving image pulled and unpacked.")
    download_seconds: float = Field(description="Checkpoint downloaded into the cache.")
    load_seconds: float = Field(description="Weights loaded onto the device.")
    start_seconds: float = Field(description="Pod start, Ray joining, Serve placing the replica.")
    basis: str = Field(description="The sizes and rates assumed, and where they come from.")
    node_cache_seconds: float | None = Field(
        default=None,
        description="The same cold start where the node weight cache holds the checkpoint: "
        "image pull, the checkpoint read from the node's disk, load and start (no download). "
        "Absent where the node cache is not enabled.",
    )
    node_cache_read_seconds: float | None = Field(
        default=None, description="Checkpoint read from the node cache's disk."
    )


class PlanOption(ApiModel):
    """One pool and GPU count the planner considered."""

    pool: str = Field(description="Node pool name.")
    gpu_product: str = Field(description="nvidia.com/gpu.product of the pool.")
    gpus_per_replica: int = Field(description="GPUs per replica considered.")
    feasible: bool = Field(description="Whether this option can serve the model at all.")
    chosen: bool = Field(default=False, description="Whether this is the plan's option.")
    batch_target: int | None = Field(default=None, description="Batch target with this option.")
    max_batch_by_memory: int | None = Field(
        default=None, description="Sequences at full context that fit beside the weights."
    )
    tokens_per_second: float | None = Field(
        default=None, description="Predicted output tokens per second per replica."
    )
    tokens_per_second_per_gpu: float | None = Field(
        default=None,
        description="tokensPerSecond / gpusPerReplica: what options rank by (after the cost, "
        "where every allowed pool has a price).",
    )
    cost_per_million_tokens: float | None = Field(
        default=None,
        description="What a million output tokens cost with this option (as "
        "predicted.costPerMillionTokens); absent when the pool has no price.",
    )
    note: str = Field(description="Why it was chosen, rejected, or passed over.")


class Plan(ApiModel):
    """How a replica is sized, with the numbers and the reasons."""

    pool: str = Field(description="Node pool the replicas run on.")
    gpu_product: str = Field(description="nvidia.com/gpu.product of the chosen pool.")
    gpus_per_replica: int = Field(description="GPUs per Serve replica (one worker pod).")
    parallelism: str = Field(
        description="How a replica spreads over its GPUs: 'single' or 'layer-split' "
        "(transformers device_map: memory adds up, one GPU computes at a time)."
    )
    compute_dtype: str = Field(description="Dtype of the math: bfloat16, float16 or float32.")
    quantization: str = Field(description="Weight format: none, int8 or nf4.")
    critical_batch: int = Field(
        description="Ridge batch B* = peak FLOP/s x bytes per weight / (2 x memory bandwidth)."
    )
    batch_target: int = Field(description="Sequences decoded together per replica.")
    knee_batch: int | None = Field(
        default=None,
        description="Smallest batch reaching 90% of the plateau tokens/s: past it more "
        "sequences add KV reads (or math) and little speed.",
    )
    slo_batch: int | None = Field(
        default=None,
        description="Largest batch whose predicted step meets the per-token SLO (online mode).",
    )
    engine: str = Field(
        default="transformers",
        description="Serving engine whose step model (overhead, efficiency) the prediction uses.",
    )
    kv_context_tokens: int | None = Field(
        default=None,
        description="Tokens of KV cache a decode step reads per sequence, from the workload's "
        "typical prompt and output (memory is sized at maxContextTokens).",
    )
    max_batch_by_memory: int = Field(
        description="Sequences at maxContextTokens whose KV cache fits beside the weights."
    )
    weight_bytes: int = Field(description="Weight bytes in memory after quantization.")
    kv_bytes_per_token: int = Field(description="KV-cache bytes per token (all layers, K and V).")
    workspace_bytes: int = Field(
        description="Workspace reserved per replica: fp32 logits for the batch, one prefill "
        "chunk's activations, and the KV of the prompt group being prefilled."
    )
    memory_per_replica_bytes: int = Field(
        description="Weights + KV cache for the batch target + workspace."
    )
    usable_memory_per_replica_bytes: int = Field(
        description="Memory budget of the replica's GPUs after the runtime reserve."
    )
    bound: Bound = Field(
        description="What set the batch target: the knee of the compute or bandwidth roof, "
        "the latency SLO, or memory."
    )
    predicted: Prediction = Field(description="Step-model prediction at the batch target.")
    reasons: list[str] = Field(description="The plan explained, one sentence per step.")
    options: list[PlanOption] = Field(description="Every option considered.")
    cold_start: ColdStart | None = Field(
        default=None,
        description="Predicted cold start of a replica (the operator fills it in once the "
        "image is chosen).",
    )
