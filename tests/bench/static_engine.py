"""The serving engine as it was before continuous batching (one static batch per call, host
sampling row by row, whole-output detokenization each step), kept verbatim as the benchmarks'
baseline: "today's static engine" is measured in the same run as the new one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ridgeline_serving.engine.base import FinishReason, GenerationRequest, GenerationResult

PREFILL_CHUNK_TOKENS = 2048
StepCallback = Callable[[int, str, FinishReason | None], None]


class StaticEngine:
    """Drives a loaded TransformersEngine's model and tokenizer the old way."""

    def __init__(
        self, model: Any, tokenizer: Any, eos_ids: set[int], max_context_tokens: int
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.max_context_tokens = max_context_tokens
        self.device = next(model.parameters()).device

    @torch.inference_mode()
    def generate(
        self, requests: list[GenerationRequest], on_step: StepCallback | None = None
    ) -> list[GenerationResult]:
        batch = len(requests)
        pad = self.tokenizer.pad_token_id
        longest = max(len(r.prompt_ids) for r in requests)
        input_ids = torch.full((batch, longest), pad, dtype=torch.long)
        mask = torch.zeros((batch, longest), dtype=torch.long)
        for row, req in enumerate(requests):
            input_ids[row, longest - len(req.prompt_ids) :] = torch.tensor(req.prompt_ids)
            mask[row, longest - len(req.prompt_ids) :] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)

        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        chunk = max(1, PREFILL_CHUNK_TOKENS // batch)
        logits = None
        for start in range(0, longest, chunk):
            end = min(longest, start + chunk)
            out = self.model(
                input_ids=input_ids[:, start:end],
                attention_mask=mask[:, :end],
                position_ids=positions[:, start:end],
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            logits = out.logits[:, -1, :]
        assert logits is not None

        generators = [self._generator(r.seed) for r in requests]
        generated: list[list[int]] = [[] for _ in requests]
        texts = [""] * batch
        finish: list[FinishReason | None] = [None] * batch
        next_pos = positions[:, -1:] + 1
        budget = [min(r.max_tokens, self.max_context_tokens - len(r.prompt_ids)) for r in requests]
        while True:
            tokens = self._sample(logits.float(), requests, generators)
            for row, req in enumerate(requests):
                if finish[row] is not None:
                    continue
                token = int(tokens[row])
                reason: FinishReason | None = None
                delta = ""
                if token in self.eos_ids:
                    reason = "stop"
                else:
                    generated[row].append(token)
                text = str(self.tokenizer.decode(generated[row], skip_special_tokens=True))
                text, hit = _apply_stop(text, req.stop)
                if reason is None and hit:
                    reason = "stop"
                elif reason is None and len(generated[row]) >= budget[row]:
                    reason = "length"
                # Emit only text that cannot change: hold back a trailing partial UTF-8
                # sequence, and any tail that could be the start of a stop string.
                safe = len(text)
                if reason is None:
                    held = _stop_prefix_overlap(text, req.stop)
                    safe = len(texts[row]) if text.endswith("\ufffd") else len(text) - held
                if text.startswith(texts[row]) and safe > len(texts[row]):
                    delta = text[len(texts[row]) : safe]
                    texts[row] += delta
                finish[row] = reason
                if on_step and (delta or reason):
                    on_step(row, delta, reason)
            if all(f is not None for f in finish):
                break
            mask = torch.cat(
                [mask, torch.ones((batch, 1), dtype=mask.dtype, device=mask.device)], 1
            )
            out = self.model(
                input_ids=tokens.view(batch, 1).to(self.device),
                attention_mask=mask,
                position_ids=next_pos,
                past_key_values=cache,
                use_cache=True,
            )
            logits = out.logits[:, -1, :]
            next_pos = next_pos + 1
        return [
            GenerationResult(
                text=texts[i],
                completion_tokens=len(generated[i]),
                finish_reason=finish[i] or "length",
            )
            for i in range(batch)
        ]

    def _generator(self, seed: int | None) -> torch.Generator | None:
        if seed is None:
            return None
        gen = torch.Generator(device="cpu")
        gen.manual_seed(seed)
        return gen

    @staticmethod
    def _sample(
        logits: torch.Tensor,
        requests: list[GenerationRequest],
        generators: list[torch.Generator | None],
    ) -> torch.Tensor:
        out = torch.empty(len(requests), dtype=torch.long)
        greedy = logits.argmax(-1).cpu()
        for row, req in enumerate(requests):
            if req.temperature == 0:
                out[row] = greedy[row]
                continue
            probs = torch.softmax(logits[row].cpu() / req.temperature, dim=-1)
            if req.top_p < 1.0:
                sorted_p, idx = probs.sort(descending=True)
                keep = sorted_p.cumsum(-1) - sorted_p < req.top_p
                filtered = torch.zeros_like(probs)
                filtered[idx[keep]] = sorted_p[keep]
                probs = filtered / filtered.sum()
            out[row] = torch.multinomial(probs, 1, generator=generators[row])[0]
        return out


def _stop_prefix_overlap(text: str, stops: list[str]) -> int:
    """Length of the longest tail of ``text`` that a stop string starts with."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if stop.startswith(text[-k:]):
                best = k
                break
    return best


def _apply_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    if cut >= 0:
        return text[:cut], True
    return text, False
