"""transformers + bitsandbytes behind the engine-owned scheduling loop (``scheduler.py``).

The model is loaded once; the loop batches continuously over it: sequences join at the next
step and leave when done, up to the planned batch and KV memory. Several GPUs per replica are
a layer split (``device_map="balanced"``), as the planner models it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ridgeline.api import Quantization
from ridgeline.api.serving_args import PREFILL_CHUNK_TOKENS, USABLE_MEMORY_FRACTION
from ridgeline_serving.engine import kv_layers
from ridgeline_serving.engine.base import (
    EngineStats,
    EventCallback,
    GenerationRequest,
    GenerationResult,
    StepStats,
)
from ridgeline_serving.engine.runner import DecodeMode, TransformersRunner
from ridgeline_serving.engine.scheduler import Limits, Scheduler

log = logging.getLogger("ridgeline.engine")
# bitsandbytes' int8 matmul warns on every call when the activations are fp32 (CPU).
warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def quantization_config(quantization: Quantization, compute_dtype: str) -> Any:
    if quantization is Quantization.NONE:
        return None
    from transformers import BitsAndBytesConfig

    if quantization is Quantization.INT8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=DTYPES[compute_dtype],
    )


def device_map(gpus: int) -> Any:
    if gpus == 0:
        return "cpu"
    if gpus == 1:
        return {"": 0}
    # Layers spread evenly: the planner counts the memory of every GPU of a replica.
    return "balanced"


def load_model(model_dir: Path, model_name: str, kwargs: dict[str, Any]) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    from ridgeline_serving.engine import attention

    config = AutoConfig.from_pretrained(model_dir)
    kv_layers.sliding_window(config)  # a model the batch cannot hold fails before its weights
    if attention.handles(config):
        try:  # decode attention without a KV copy per query head (attention.py says why)
            return AutoModelForCausalLM.from_pretrained(
                model_dir, attn_implementation=attention.register(), **kwargs
            )
        except ValueError as exc:  # a model class that takes no registered attention function
            log.info("%s: transformers' default attention (%s)", model_name, exc)
    else:
        log.info(
            "%s: transformers' default attention (its class does not run on SDPA, or keeps "
            "its own attention classes)",
            model_name,
        )
    return AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)


# bitsandbytes' packed CPU layout for nf4 (used where the CPU has AVX512-BF16) takes output
# features in blocks of this many rows, and input features in whole quantization blocks; it
# fails at the first forward otherwise.
CPU_NF4_BLOCK_ROWS = 32


def keep_cpu_nf4_layout(model: Any) -> None:
    """Layers the packed layout cannot hold keep the plain nf4 layout (bitsandbytes 0.50 would
    fail at the first forward on such a CPU: a tiny model's 136-wide MLP, say; real models'
    widths are multiples of 64)."""
    from bitsandbytes.nn.modules import Linear4bit

    for module in model.modules():
        if not isinstance(module, Linear4bit):
            continue
        block = int(getattr(getattr(module.weight, "quant_state", None), "blocksize", 64))
        if module.out_features % CPU_NF4_BLOCK_ROWS or module.in_features % block:
            module.support_avx512bf16_for_cpu = False


class TransformersEngine:
    def __init__(
        self,
        model_dir: Path,
        model_name: str,
        quantization: Quantization,
        compute_dtype: str,
        gpus: int,
        max_context_tokens: int,
        *,
        max_batch: int = 64,
        kv_tokens: int | None = None,
        prefill_tokens: int = PREFILL_CHUNK_TOKENS,
        usable_memory_fraction: float = USABLE_MEMORY_FRACTION,
        on_step: Callable[[StepStats], None] | None = None,
        decode: DecodeMode = "auto",
    ) -> None:
        from transformers import AutoTokenizer

        self.model_name = model_name
        self.max_context_tokens = max_context_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        kwargs: dict[str, Any] = {"dtype": DTYPES[compute_dtype], "device_map": device_map(gpus)}
        qconfig = quantization_config(quantization, compute_dtype)
        if qconfig is not None:
            kwargs["quantization_config"] = qconfig
        if gpus > 1:
            per_gpu = torch.cuda.get_device_properties(0).total_memory * usable_memory_fraction
            kwargs["max_memory"] = {i: int(per_gpu) for i in range(gpus)}
        self.model = load_model(model_dir, model_name, kwargs)
        self.model.eval()
        if quantization is Quantization.NF4 and gpus == 0:
            keep_cpu_nf4_layout(self.model)
        self.device = next(self.model.parameters()).device
        self.vocab_size = int(self.model.config.get_text_config().vocab_size)
        eos = self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.limits = Limits(
            max_batch=max_batch,
            kv_tokens=kv_tokens or max_batch * max_context_tokens,
            prefill_tokens=prefill_tokens,
            max_context_tokens=max_context_tokens,
        )
        self.scheduler = Scheduler(
            TransformersRunner(
                self.model,
                int(self.tokenizer.pad_token_id),
                max_batch=self.limits.max_batch,
                kv_tokens=self.limits.kv_tokens,
                max_context=max_context_tokens,
                decode=decode,  # auto: CUDA graphs on a CUDA device where the model allows
            ),
            self.tokenizer,
            self.eos_ids,
            self.limits,
            on_step,
        )
        log.info(
            "loaded %s (%s, %s) on %s; batch up to %d, KV %d tokens, prefill %d tokens/step",
            model_name,
            quantization.value,
            compute_dtype,
            self.device,
            self.limits.max_batch,
            self.limits.kv_tokens,
            self.limits.prefill_tokens,
        )

    # ---- tokenization ------------------------------------------------------------------

    def encode_prompt(self, prompt: str) -> list[int]:
        ids: list[int] = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        return ids

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """``apply_chat_template``'s ids, the template rendered within a time bound (a template
        that never returns would hold a worker thread for good: see ``chat_template.py``)."""
        from ridgeline_serving.chat_template import encode_chat

        return encode_chat(self.tokenizer, messages)

    # ---- the engine protocol -----------------------------------------------------------

    def submit(self, request: GenerationRequest, on_event: EventCallback) -> int:
        return self.scheduler.submit(request, on_event)

    def cancel(self, sequence_id: int) -> None:
        self.scheduler.cancel(sequence_id)

    def stats(self) -> EngineStats:
        return self.scheduler.stats()

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return self.scheduler.generate(requests)

    def close(self) -> None:
        self.scheduler.close()
