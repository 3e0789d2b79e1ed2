"""The engine-owned scheduling loop (one thread per replica), after vLLM's and transformers'
continuous-batching schedulers.

Every step: take new requests; start a prefill group from the waiting queue when none is in
progress (first come, first served, within the planned batch and the planned KV tokens); run
one prefill chunk of at most ``prefill_tokens`` tokens (the budget does not shrink with the
running batch); run one decode forward for every running sequence; sample all rows at once;
then move a prefilled group into the running batch and drop every finished or cancelled
sequence, which frees its KV memory before the next step.

KV memory is reserved per sequence for its prompt plus its maximum output when it joins, so a
running sequence is never preempted; ``preemptions`` stays 0 and is exported so a dashboard
would show it if that policy changes.

Over 300 lines: the loop's phases (intake, group forming, the step, a row's advance, failure)
all move sequences between the same queues under one thread's ownership; split across modules
they would share that state by reference. Its reshaping is the CUDA-graph issue's (23).
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from ridgeline_serving.engine.base import (
    EngineStats,
    EventCallback,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    SequenceEvent,
    StepStats,
    TokenLogprob,
)
from ridgeline_serving.engine.detokenize import Detokenizer
from ridgeline_serving.engine.row_params import RowParams, checked
from ridgeline_serving.engine.sampling import Sampled, sample_rows

log = logging.getLogger("ridgeline.engine")
# While a batch decodes, a lone arrival waits up to this many steps for company, so that
# arrivals share one prefill forward (and one cache merge) instead of one each.
JOIN_WAIT_STEPS = 1
JOIN_BATCH = 4


class ModelRunner(Protocol):
    device: torch.device

    def start(self, prompts: list[list[int]]) -> Any: ...

    def join(self, group: Any) -> None: ...

    def decode(self, tokens: list[int]) -> torch.Tensor: ...

    def keep(self, rows: list[int]) -> None: ...


@dataclass(frozen=True)
class Limits:
    max_batch: int  # the planned batch
    kv_tokens: int  # the planned KV cache, in tokens (maxBatchByMemory x context)
    prefill_tokens: int  # prompt tokens per step
    max_context_tokens: int


@dataclass
class Sequence:
    id: int
    request: GenerationRequest
    on_event: EventCallback
    detok: Detokenizer
    seed: int
    budget: int
    output_ids: list[int] = field(default_factory=list)
    cancelled: bool = False
    queued_step: int = 0
    _params: RowParams | None = None

    @property
    def reserved(self) -> int:
        return len(self.request.prompt_ids) + self.budget

    def prepare(self, vocab: int, eos_ids: set[int]) -> None:
        """Its sampling parameters, checked once (ValueError: they cannot be sampled with)."""
        r = self.request
        self._params = checked(
            RowParams(
                r.temperature,
                r.top_p,
                r.top_k,
                r.presence_penalty,
                r.frequency_penalty,
                r.logprobs,
                self.seed,
                self.output_ids,
                r.repetition_penalty,
                r.min_tokens,
                tuple(sorted(eos_ids)),
                np.asarray(r.prompt_ids, dtype=np.int64) if r.repetition_penalty != 1 else (),
            ),
            vocab,
        )

    def params(self) -> RowParams:
        assert self._params is not None, "prepared at intake"
        return self._params


@dataclass
class Group:
    job: Any
    sequences: list[Sequence]


class Scheduler:
    def __init__(
        self,
        runner: ModelRunner,
        tokenizer: Any,
        eos_ids: set[int],
        limits: Limits,
        on_step: Callable[[StepStats], None] | None = None,
    ) -> None:
        self.runner = runner
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        # Ids past the tokenizer's (a model's embedding padded to a round size: Phi-3's 32,064
        # rows for 32,011 tokens, Qwen2's 151,936 for 151,665) are no tokens: never drawn.
        self.tokenizer_size = len(tokenizer)
        self.limits = limits
        self.on_step = on_step
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._inbox: list[Sequence] = []
        self._cancels: set[int] = set()
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.group: Group | None = None
        self.steps = 0
        self.preemptions = 0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="ridgeline-engine", daemon=True)
        self._thread.start()

    # ---- called from any thread ----------------------------------------------------------

    def submit(self, request: GenerationRequest, on_event: EventCallback) -> int:
        seed = request.seed if request.seed is not None else random.getrandbits(63)
        budget = min(request.max_tokens, self.limits.max_context_tokens - len(request.prompt_ids))
        seq = Sequence(
            next(self._ids),
            request,
            on_event,
            Detokenizer(self.tokenizer, request.stop),
            seed,
            max(budget, 1),
        )
        with self._lock:
            self._inbox.append(seq)
        self._wake.set()
        return seq.id

    def cancel(self, sequence_id: int) -> None:
        with self._lock:
            self._cancels.add(sequence_id)
        self._wake.set()

    def stats(self) -> EngineStats:
        group = self.group.sequences if self.group else []
        used = sum(len(s.request.prompt_ids) + len(s.output_ids) for s in self.running + group)
        return EngineStats(
            running=len(self.running) + len(group),
            waiting=len(self.waiting) + len(self._inbox),
            kv_tokens_used=used,
            kv_tokens_planned=self.limits.kv_tokens,
            steps=self.steps,
            preemptions=self.preemptions,
        )

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=10)

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        results = [GenerationResult("", 0, "length") for _ in requests]
        done = [threading.Event() for _ in requests]
        errors: list[str] = []

        def collect(i: int) -> EventCallback:
            def on_event(event: SequenceEvent) -> None:
                results[i].text += event.delta
                results[i].completion_tokens = event.completion_tokens
                results[i].logprobs.extend(event.logprobs)
                if event.error:
                    errors.append(event.error)
                if event.finish is not None:
                    results[i].finish_reason = event.finish
                    done[i].set()

            return on_event

        for i, request in enumerate(requests):
            self.submit(request, collect(i))
        for event in done:
            event.wait()
        if errors:
            raise RuntimeError(errors[0])
        return results

    # ---- the engine's thread -------------------------------------------------------------

    def _loop(self) -> None:
        while not self._closed:
            self._intake()
            if not (self.running or self.waiting or self.group):
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                self._step()
            except Exception as exc:  # a failed forward fails its sequences, not the replica
                log.exception("engine step failed")
                self._fail_all(f"{type(exc).__name__}: {exc}")

    def _intake(self) -> None:
        with self._lock:
            new, self._inbox = self._inbox, []
            cancels, self._cancels = self._cancels, set()
        for seq in new:
            seq.queued_step = self.steps
            try:
                seq.prepare(self.tokenizer_size, self.eos_ids)
            except ValueError as exc:  # parameters no row can be sampled with fail their row
                self._fail([seq], f"invalid sampling parameters: {exc}")
                continue
            self.waiting.append(seq)
        if cancels:
            for seq in itertools.chain(
                self.waiting, self.running, self.group.sequences if self.group else []
            ):
                if seq.id in cancels:
                    seq.cancelled = True
            for seq in self.waiting:
                if seq.cancelled:
                    self._gone(seq)
            self.waiting = deque(s for s in self.waiting if not s.cancelled)

    def _form_group(self) -> None:
        if not self.waiting:
            return
        free_rows = self.limits.max_batch - len(self.running)
        if (
            self.running
            and self.waiting
            and len(self.waiting) < min(free_rows, JOIN_BATCH)
            and self.steps - self.waiting[0].queued_step < JOIN_WAIT_STEPS
        ):
            return  # a step's wait lets the next arrivals share this prefill forward
        free_kv = self.limits.kv_tokens - sum(s.reserved for s in self.running)
        chosen: list[Sequence] = []
        longest = 0
        while self.waiting and len(chosen) < free_rows:
            seq = self.waiting[0]
            width = max(longest, len(seq.request.prompt_ids))
            fits_kv = seq.reserved <= free_kv or not (chosen or self.running)
            fits_chunk = not chosen or width * (len(chosen) + 1) <= self.limits.prefill_tokens
            if not (fits_kv and fits_chunk):
                break
            chosen.append(self.waiting.popleft())
            free_kv -= seq.reserved
            longest = width
        if chosen:
            self.group = Group(self.runner.start([s.request.prompt_ids for s in chosen]), chosen)

    def _step(self) -> None:
        started = time.perf_counter()
        if self.group is None:
            self._form_group()
        prefill_tokens, group_logits = 0, None
        if self.group is not None:
            try:
                prefill_tokens, group_logits = self.group.job.step(self.limits.prefill_tokens)
            except Exception as exc:  # a prompt that fails its prefill fails its group only
                log.exception("prefill failed")
                failed, self.group = self.group.sequences, None
                self._fail(failed, f"{type(exc).__name__}: {exc}")
        decoding = list(self.running)
        parts = []
        if decoding:
            parts.append(self.runner.decode([s.output_ids[-1] for s in decoding]))
        rows = list(decoding)
        if group_logits is not None:
            assert self.group is not None
            parts.append(group_logits)
            rows += self.group.sequences
            self.runner.join(self.group.job)
            self.running += self.group.sequences
            self.group = None
        if rows:
            logits = torch.cat(parts) if len(parts) > 1 else parts[0]
            if logits.shape[-1] > self.tokenizer_size:
                logits = logits[:, : self.tokenizer_size]
            params = [s.params() for s in rows]
            events = [
                self._advance(seq, *draw) if isinstance(draw, tuple) else self._failed(seq, draw)
                for seq, draw in zip(rows, sample_rows(logits, params), strict=True)
            ]
            keep = [
                i
                for i, (seq, event) in enumerate(zip(rows, events, strict=True))
                if not seq.cancelled and (event is None or event.finish is None)
            ]
            if len(keep) < len(self.running):
                self.runner.keep(keep)
                self.running = [self.running[i] for i in keep]
            # sent once the batch is updated: a finished sequence's memory is already free
            for seq, event in zip(rows, events, strict=True):
                if seq.cancelled:
                    self._gone(seq)
                elif event is not None and not self._send(seq, event):
                    seq.cancelled = True
        self.steps += 1
        if self.on_step is not None:
            self.on_step(
                StepStats(
                    len(self.running),
                    prefill_tokens,
                    len(decoding),
                    len(rows),
                    time.perf_counter() - started,
                )
            )

    def _failed(self, seq: Sequence, error: str) -> SequenceEvent | None:
        """A row whose sampling failed: its last event (it leaves the batch with the finished)."""
        if seq.cancelled:
            return None
        return SequenceEvent("", "stop", len(seq.output_ids), error=error)

    def _advance(self, seq: Sequence, sampled: Sampled, row: int) -> SequenceEvent | None:
        """Apply one sampled token to a sequence: the event to send, if any."""
        if seq.cancelled:
            return None
        token = sampled.tokens[row]
        logprobs: list[TokenLogprob] = []
        finish: FinishReason | None = None
        r = seq.request
        # ignore_eos: the token is output like any other (it decodes to no text); before
        # min_tokens it cannot be drawn (sampling bans it), nor end the sequence
        if token in self.eos_ids and not r.ignore_eos and len(seq.output_ids) >= r.min_tokens:
            text, finish = seq.detok.finish(), "stop"
        else:
            seq.output_ids.append(token)
            final = len(seq.output_ids) >= seq.budget
            # as vLLM: stop strings end a sequence only past min_tokens
            text, hit = seq.detok.add(token, final, len(seq.output_ids) > r.min_tokens)
            finish = "stop" if hit else ("length" if final else None)
            if seq.request.logprobs is not None and sampled.logprobs is not None:
                logprobs.append(self._logprob(sampled, row, token, seq.request.logprobs))
        if text or finish or logprobs:
            return SequenceEvent(text, finish, len(seq.output_ids), logprobs)
        return None

    def _send(self, seq: Sequence, event: SequenceEvent) -> bool:
        try:
            seq.on_event(event)
        except Exception:  # a listener's failure ends its own sequence only
            log.exception("sequence %d: listener failed; cancelling it", seq.id)
            return False
        return True

    def _logprob(self, sampled: Sampled, row: int, token: int, k: int) -> TokenLogprob:
        assert sampled.logprobs is not None
        assert sampled.top_ids is not None
        assert sampled.top_logprobs is not None
        top = [
            (self._piece(t), lp)
            for t, lp in zip(sampled.top_ids[row][:k], sampled.top_logprobs[row][:k], strict=True)
        ]
        return TokenLogprob(token, self._piece(token), sampled.logprobs[row], top)

    def _piece(self, token: int) -> str:
        return str(self.tokenizer.decode([token]))

    def _gone(self, seq: Sequence) -> None:
        """A cancelled sequence has left the engine (its KV memory is free): its listener's
        last event, so whoever counts it in flight stops only now."""
        self._send(seq, SequenceEvent("", "cancelled", len(seq.output_ids)))

    def _fail_all(self, error: str) -> None:
        victims = self.running + (self.group.sequences if self.group else [])
        self.running, self.group = [], None
        self.runner.keep([])
        self._fail(victims, error)

    def _fail(self, victims: list[Sequence], error: str) -> None:
        for seq in victims:
            self._send(seq, SequenceEvent("", "stop", len(seq.output_ids), error=error))
