"""The planner's memory figures describe what runs: a replica started from its plan's
``ServingArgs`` (``ridgeline serve``'s path: plan for this machine, pull, load, warm up) holds
exactly the KV the plan counts for its batch from the warm-up on, a burst of mixed-length
requests leaves those buffers as they are, and the prompt group prefilled beside them stays
within what the plan's workspace counts for it."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from ridgeline.api import InferenceModel
from ridgeline.planner import memory
from ridgeline.render import serving_args_for
from ridgeline_serving.engine import GenerationRequest, SequenceEvent
from ridgeline_serving.engine.prefill import PrefillGroup
from ridgeline_serving.engine.runner import TransformersRunner
from ridgeline_serving.local import local_plan
from ridgeline_serving.startup import load_engine

CONTEXT = 256


def tiny_model(uri: str) -> InferenceModel:
    return InferenceModel.model_validate(
        {
            "apiVersion": "ridgeline.dev/v1alpha1",
            "kind": "InferenceModel",
            "metadata": {"name": "tiny", "namespace": "default"},
            "spec": {
                "model": {"uri": uri},
                "workload": {"maxContextTokens": CONTEXT},
                "accelerators": ["cpu"],
            },
        }
    )


def kv_bytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.nbytes for t in tensors)


def test_the_replica_holds_the_kv_its_plan_counts(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_model(tiny_dir.as_uri())
    local, plan = local_plan(model)
    args = serving_args_for(local, plan, str(tmp_path / "cache"))  # `ridgeline serve`'s
    planned_kv = plan.memory_per_replica_bytes - plan.weight_bytes - plan.workspace_bytes
    assert planned_kv == plan.batch_target * CONTEXT * plan.kv_bytes_per_token

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    engine: Any
    engine, _, _ = load_engine(args)
    try:
        runner = engine.scheduler.runner
        assert isinstance(runner, TransformersRunner)
        batch = runner.running

        def buffers() -> list[torch.Tensor]:
            return [t for layer in batch.layers for t in (layer.key_buffer, layer.value_buffer)]

        warm = buffers()
        assert kv_bytes(warm) == planned_kv  # allocated by the warm-up, the plan's to the byte

        groups: list[int] = []  # a prompt group's KV when it joins (its largest)
        join = runner.join

        def measured_join(group: PrefillGroup) -> None:
            layers = group.cache.layers
            groups.append(kv_bytes([t for lr in layers for t in (lr.keys, lr.values)]))
            join(group)

        monkeypatch.setattr(runner, "join", measured_join)
        burst(engine, requests=3 * plan.batch_target)
        assert [id(t) for t in buffers()] == [id(t) for t in warm]  # never reallocated
        assert len(groups) > 1
        group_budget = memory.prefill_group_kv_bytes(plan.kv_bytes_per_token, CONTEXT)
        assert max(groups) <= group_budget
    finally:
        engine.close()
        torch.set_num_threads(saved)


def burst(engine: Any, requests: int) -> None:
    """Mixed prompts and outputs, all sent at once: groups form, rows join and leave."""
    rng = random.Random(0)
    done = threading.Semaphore(0)
    engine.scheduler.eos_ids = set()  # random weights: every request runs to its length

    def on_event(event: SequenceEvent) -> None:
        if event.finish is not None:
            done.release()

    for _ in range(requests):
        n = rng.randint(1, 64)
        prompt = [rng.randint(3, 200) for _ in range(rng.randint(1, CONTEXT - n))]
        engine.submit(GenerationRequest(prompt, n, temperature=0), on_event)
    for _ in range(requests):
        assert done.acquire(timeout=300)
