"""What the planner needs to know about a model, derived from its config and tensor list."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from ridgeline.shape.safetensors_header import FLOAT_DTYPES, TensorInfo


class TensorRole(enum.StrEnum):
    # nn.Linear weights inside the blocks: what bitsandbytes quantizes.
    LINEAR = "linear"
    # Token embeddings and the output head: bitsandbytes leaves them in 16-bit.
    EMBEDDING = "embedding"
    LM_HEAD = "lm_head"
    # Norm weights, biases: tiny, kept in 16-bit.
    OTHER = "other"


_EMBEDDING = re.compile(r"(^|\.)(embed_tokens|wte|wpe|word_embeddings|embeddings|tok_embeddings)\.")
_LM_HEAD = re.compile(r"(^|\.)(lm_head|output|embed_out)\.weight$")


def tensor_role(tensor: TensorInfo) -> TensorRole:
    if _LM_HEAD.search(tensor.name):
        return TensorRole.LM_HEAD
    if _EMBEDDING.search(tensor.name):
        return TensorRole.EMBEDDING
    if len(tensor.shape) == 2 and tensor.name.endswith(".weight"):
        return TensorRole.LINEAR
    return TensorRole.OTHER


class ParamsSource(enum.StrEnum):
    """Where the parameter counts come from."""

    # The checkpoint's safetensors headers: exact.
    SAFETENSORS = "safetensors"
    # Counted from config.json for a family whose layout is known (within 1%).
    CONFIG = "config"
    # Counted from config.json as a Llama-style decoder: a family not known to the estimator.
    CONFIG_GUESS = "config-guess"


class _CamelModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid"
    )


class LinearLayer(_CamelModel):
    """One quantizable matrix: enough to compute bitsandbytes' per-row and per-block overhead."""

    out_features: int
    in_features: int


class ModelShape(_CamelModel):
    architecture: str = Field(description="config.json 'architectures[0]' or 'model_type'.")
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tied_embeddings: bool
    max_position_embeddings: int | None = Field(
        default=None, description="Longest context the model was trained for, if stated."
    )
    checkpoint_bytes: int = Field(description="Bytes of tensor data in the checkpoint.")
    params_by_dtype: dict[str, int] = Field(description="Parameter count per safetensors dtype.")
    params_by_role: dict[TensorRole, int]
    float_params_by_role: dict[TensorRole, int] = Field(
        description="Floating-point parameters per role: what a dtype cast resizes."
    )
    non_float_bytes: int = Field(description="Integer tensors (buffers), stored as they are.")
    linear_layers: list[LinearLayer] = Field(repr=False)
    params_source: ParamsSource = Field(
        default=ParamsSource.SAFETENSORS,
        description="Counted from the safetensors headers, or estimated from config.json.",
    )

    @property
    def num_params(self) -> int:
        return sum(self.params_by_dtype.values())

    @classmethod
    def from_parts(
        cls,
        arch: Mapping[str, object],
        tensors: Iterable[TensorInfo],
        params_source: ParamsSource = ParamsSource.SAFETENSORS,
    ) -> ModelShape:
        params_by_dtype: dict[str, int] = {}
        params_by_role = dict.fromkeys(TensorRole, 0)
        float_by_role = dict.fromkeys(TensorRole, 0)
        non_float_bytes = 0
        checkpoint_bytes = 0
        linear: list[LinearLayer] = []
        has_lm_head = False
        for t in tensors:
            role = tensor_role(t)
            has_lm_head |= role is TensorRole.LM_HEAD
            params_by_dtype[t.dtype] = params_by_dtype.get(t.dtype, 0) + t.numel
            params_by_role[role] += t.numel
            checkpoint_bytes += t.nbytes
            if t.dtype in FLOAT_DTYPES:
                float_by_role[role] += t.numel
            else:
                non_float_bytes += t.nbytes
            if role is TensorRole.LINEAR:
                linear.append(LinearLayer(out_features=t.shape[0], in_features=t.shape[1]))
        tied = arch.get("tied_embeddings")
        return cls(
            **{k: v for k, v in arch.items() if k != "tied_embeddings"},
            # A checkpoint without an lm_head tensor ties it to the embeddings, whatever the
            # config says.
            tied_embeddings=bool(tied) or not has_lm_head,
            checkpoint_bytes=checkpoint_bytes,
            params_by_dtype=params_by_dtype,
            params_by_role=params_by_role,
            float_params_by_role=float_by_role,
            non_float_bytes=non_float_bytes,
            linear_layers=linear,
            params_source=params_source,
        )
