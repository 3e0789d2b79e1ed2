"""On an NVIDIA GPU, in one run of a few minutes (`make bench-gpu`): the engine's decode step
eager and under CUDA graphs, side by side. A random-weight Llama of TinyLlama-1.1B's shape in
bf16 and nf4 (int8 eager: LLM.int8 cannot be captured) at batch 1 to 512; an 8B-shaped Llama
(Llama-3.1-8B's shape, random bf16 weights made on the GPU) up to and at the planner's B*;
closed-loop clients with mixed prompt and output lengths against whole-batch steps; then the
KV passes at 1k-8k context (``bench_kv_passes.py``'s GPU section). Each figure names its
mode; the issue's targets (#23) are checked at the end. Writes docs/benchmarks.md (sections
"Serving engine, CUDA graphs" and "KV passes per step, GPU").

Needs torch and transformers only: without bitsandbytes the nf4 and int8 rows are skipped,
saying why; no Ray. ``--smoke`` runs every path on tiny shapes on the CPU in seconds (the
static step run as is stands in for the graphs there)."""

from __future__ import annotations

import argparse
import functools
import importlib.util
import random
import statistics
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from bench_gpu import SMOKE, planner_terms, random_checkpoint
from bench_report import write_section

from ridgeline.api import Quantization
from ridgeline_dev.checkpoints import LLAMA_1B_CONFIG, write_skeleton
from ridgeline_serving.engine import GenerationRequest, StepStats
from ridgeline_serving.engine.runner import TransformersRunner
from ridgeline_serving.engine.transformers_engine import (
    TransformersEngine,
    load_model,
    quantization_config,
)

LLAMA_8B_CONFIG: dict[str, Any] = {  # Llama-3.1-8B's shape
    **LLAMA_1B_CONFIG,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "rope_theta": 500000.0,
}
PROMPT, WARM, TIMED = 128, 4, 16  # a sweep point: prompt tokens, untimed and timed steps
BUDGET_S = 450  # sections that would start past this are skipped, saying so
ORDER = {"none": 0, "nf4": 1, "int8": 2}


class Run:
    """Where this run is (GPU or smoke), its clock, and what it has measured."""

    def __init__(self, smoke: bool) -> None:
        self.smoke = smoke
        self.cuda = not smoke
        self.graphs = "static" if smoke else "graphs"  # the CPU cannot capture
        self.dtype = "float32" if smoke else "bfloat16"
        self.started = time.perf_counter()
        self.lines: list[str] = []
        self.steps: dict[tuple[str, str, str, int], float] = {}  # (model, format, mode, batch)

    def left(self) -> float:
        return BUDGET_S - (time.perf_counter() - self.started)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def decode_sweep(run: Run, model: Any, mode: str, batches: list[int]) -> dict[int, float]:
    """Median whole-batch decode step (ms) at each batch: ``batch`` prompts join, then
    ``WARM`` + ``TIMED`` steps, each ending on the host with the greedy ids (as the engine's)."""
    most = max(batches)
    runner = TransformersRunner(
        model,
        0,
        max_batch=most,
        kv_tokens=most * 256,
        max_context=256,
        decode=mode,  # type: ignore[arg-type]
    )
    out: dict[int, float] = {}
    for batch in batches:
        for first in range(0, batch, 64):  # prompt groups of 64: a prefill's activations
            group = runner.start(
                [[5 + (i % 100)] * PROMPT for i in range(first, min(batch, first + 64))]
            )
            while group.step(1 << 20)[1] is None:
                pass
            runner.join(group)
        tokens = [7] * batch
        times = []
        for step in range(WARM + TIMED):
            began = time.perf_counter()
            tokens = runner.decode(tokens).argmax(-1).tolist()
            if step >= WARM:
                times.append(time.perf_counter() - began)
        runner.keep([])
        out[batch] = statistics.median(times) * 1e3
        print(f"  {mode:6} batch {batch:4}: {out[batch]:8.2f} ms", flush=True)
    if runner.mode != mode:
        print(f"  ({mode} fell back to {runner.mode})")
    return out


def load(run: Run, model_dir: Path, quantization: str) -> Any:
    kwargs: dict[str, Any] = {"dtype": getattr(torch, run.dtype)}
    kwargs["device_map"] = {"": 0} if run.cuda else "cpu"
    qconfig = quantization_config(Quantization(quantization), run.dtype)
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
    return load_model(model_dir, quantization, kwargs).eval()


def free(run: Run) -> None:
    import gc

    gc.collect()
    if run.cuda:
        torch.cuda.empty_cache()


def small_model(run: Run, model_dir: Path, batches: list[int]) -> None:
    """The 1.1B shape: bf16 and nf4 eager and graphs, int8 eager."""
    formats = ["none", "nf4", "int8"]
    if importlib.util.find_spec("bitsandbytes") is None:
        run.lines.append("nf4 and int8 rows skipped: bitsandbytes is not installed here.\n")
        formats = ["none"]
    for fmt in formats:
        if run.left() < 60:
            run.lines.append(f"{fmt} rows skipped: the run's time budget is spent.\n")
            continue
        model = load(run, model_dir, fmt)
        modes = ["eager"] if fmt == "int8" else ["eager", run.graphs]
        for mode in modes:
            print(f"1.1B {fmt} {mode}", flush=True)
            for b, ms in decode_sweep(run, model, mode, batches).items():
                run.steps[("1.1B", fmt, mode, b)] = ms
        del model
        free(run)


def large_model(run: Run, config: dict[str, Any], batches: list[int], tmp: Path) -> int:
    """The 8B shape in bf16, random weights made on the device: eager and graphs up to and
    at the planner's B* (returned)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from ridgeline_serving.engine import attention

    product = torch.cuda.get_device_name(0).replace(" ", "-") if run.cuda else "cpu"
    memory = torch.cuda.get_device_properties(0).total_memory // 2**20 if run.cuda else 0
    b_star, terms = planner_terms(write_skeleton(config, tmp / "8b"), product, memory, "none")
    batches = sorted({*batches, b_star})
    fields = {
        k: v for k, v in config.items() if k not in ("architectures", "model_type", "torch_dtype")
    }
    torch.manual_seed(0)
    with torch.device("cuda" if run.cuda else "cpu"):
        model = LlamaForCausalLM._from_config(
            LlamaConfig(**fields),
            attn_implementation=attention.register(),
            dtype=getattr(torch, run.dtype),
        ).eval()
    for mode in ("eager", run.graphs):
        print(f"8B none {mode}", flush=True)
        for b, ms in decode_sweep(run, model, mode, batches).items():
            run.steps[("8B", "none", mode, b)] = ms
    del model
    free(run)
    at = run.steps[("8B", "none", run.graphs, b_star)]
    run.lines.append(
        f"8B shape at the planner's B* {b_star}: {b_star / at * 1e3:.0f} tokens/s under graphs, "
        f"{b_star / at * 1e3 / terms.plateau_tokens_per_second:.0%} of the planner's roofline "
        f"plateau ({terms.plateau_tokens_per_second:.0f} tokens/s).\n"
    )
    return b_star


def closed_loop(
    run: Run, model_dir: Path, mode: str, clients: int, seconds: float
) -> tuple[float, float]:
    """Median whole-batch step and median closed-loop step (ms) in the engine: ``clients``
    clients, each sending its next request (prompt 16-512 tokens, output 16-256) when one ends."""
    steps: list[StepStats] = []
    engine = TransformersEngine(
        model_dir, "loop", Quantization.NONE, run.dtype, 1 if run.cuda else 0, 1024,
        max_batch=clients, on_step=steps.append, decode=mode,  # type: ignore[arg-type]
    )  # fmt: skip
    engine.scheduler.eos_ids = set()
    try:
        whole = [GenerationRequest([5 + i] * PROMPT, 32, temperature=0) for i in range(clients)]
        engine.generate(whole)
        steps.clear()
        engine.generate(whole)
        full = [s.seconds for s in steps if s.decode_tokens == clients and not s.prefill_tokens]
        rng = random.Random(0)
        stop = threading.Event()

        def send(_: Any = None) -> None:
            if stop.is_set():
                return
            prompt = [5 + rng.randrange(200) for _ in range(rng.randint(16, 512))]
            request = GenerationRequest(prompt, rng.randint(16, 256), temperature=0)
            engine.submit(request, lambda e: send() if e.finish is not None else None)

        for _ in range(clients):
            send()
        time.sleep(seconds / 4)  # the batch fills
        steps.clear()
        time.sleep(seconds)
        stop.set()
        busy = [s.seconds for s in steps if s.decode_tokens >= 0.75 * clients]
    finally:
        engine.close()
    nan = float("nan")
    return (
        statistics.median(full) * 1e3 if full else nan,
        statistics.median(busy) * 1e3 if busy else nan,
    )


def table(run: Run) -> list[str]:
    rows = [
        "| model | format | batch | eager step (ms) | graphs step (ms) | eager / graphs | "
        "graphs tokens/s |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = sorted(
        {(m, f, b) for m, f, _, b in run.steps}, key=lambda k: (k[0] != "1.1B", ORDER[k[1]], k[2])
    )
    for model, fmt, batch in keys:
        eager = run.steps.get((model, fmt, "eager", batch))
        graphs = run.steps.get((model, fmt, run.graphs, batch))
        cells = [f"{eager:.2f}" if eager else "-", f"{graphs:.2f}" if graphs else "eager only"]
        ratio = f"{eager / graphs:.2f}x" if eager and graphs else "-"
        rate = f"{batch / graphs * 1e3:.0f}" if graphs else "-"
        rows.append(f"| {model} | {fmt} | {batch} | {cells[0]} | {cells[1]} | {ratio} | {rate} |")
    return [*rows, ""]


def targets(run: Run, loop: dict[str, tuple[float, float]]) -> list[str]:
    """Issue #23's targets, each met or not."""
    get = run.steps.get
    g = run.graphs
    checks = []
    for batch, limit in ((64, 5.0), (256, 8.0)):
        step = get(("1.1B", "none", g, batch))
        if step is not None:
            checks.append(
                (f"1.1B bf16 step at batch {batch} at most {limit} ms: {step:.2f}", step <= limit)
            )
    bf16, nf4 = get(("1.1B", "none", g, 64)), get(("1.1B", "nf4", g, 64))
    if bf16 and nf4:
        checks.append((f"nf4 within 2x of bf16 at batch 64: {nf4 / bf16:.2f}x", nf4 <= 2 * bf16))
    if g in loop:
        whole, busy = loop[g]
        checks.append(
            (
                f"closed-loop steps within 1.3x of whole-batch steps: {busy / whole:.2f}x",
                busy <= 1.3 * whole,
            )
        )
    return [f"- {'met' if ok else 'NOT met'}: {what}" for what, ok in checks] + [""]


def attempt(run: Run, what: str, section: Any) -> None:
    """Run one section; on a GPU a failure is noted in the table's text and the run goes on
    (the run is one shot: the other sections' figures are kept)."""
    try:
        section()
    except Exception as exc:
        if run.smoke:  # what the smoke test is for
            raise
        traceback.print_exc()
        run.lines.append(f"{what} failed: {type(exc).__name__}: {exc}\n")
        free(run)


def closed(
    run: Run, model_dir: Path, mode: str, clients: int, seconds: float, loop: dict[str, Any]
) -> None:
    whole, busy = loop[mode] = closed_loop(run, model_dir, mode, clients, seconds)
    run.lines.append(
        f"Closed loop, {mode}: whole-batch step {whole:.2f} ms, mixed-length step "
        f"{busy:.2f} ms ({busy / whole:.2f}x).\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        print("bench_gpu_graphs: no CUDA device here; run `make bench-gpu` on a GPU machine")
        return 0
    run = Run(args.smoke)
    if args.smoke:
        torch.set_num_threads(1)
    small, large = (
        (SMOKE, {**SMOKE, "num_hidden_layers": 3})
        if args.smoke
        else (LLAMA_1B_CONFIG, LLAMA_8B_CONFIG)
    )
    batches = [1, 2, 4] if args.smoke else [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    loop: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = random_checkpoint(small, Path(tmp) / "small")
        attempt(run, "1.1B rows", lambda: small_model(run, model_dir, batches))
        clients, seconds = (4, 1.0) if args.smoke else (64, 8.0)
        for mode in ("eager", run.graphs):
            if run.left() > 60:
                attempt(
                    run,
                    f"closed loop, {mode}",
                    functools.partial(closed, run, model_dir, mode, clients, seconds, loop),
                )
        if run.left() > 200:
            sizes = [1, 2] if args.smoke else [1, 8, 32, 64, 128, 256]
            attempt(run, "8B rows", lambda: large_model(run, large, sizes, Path(tmp)))
        else:
            run.lines.append("8B rows skipped: the run's time budget is spent.\n")
    head = (
        f"Decode step, eager against CUDA graphs (`make bench-gpu`, torch {torch.__version__}): "
        f"random-weight Llamas, {PROMPT}-token prompts, the median of {TIMED} whole-batch steps "
        f"after {WARM} untimed (graph captures happen there), each ending with the greedy ids on "
        "the host as the engine's steps do.\n"
    )
    took = f"This run took {time.perf_counter() - run.started:.0f} s before the KV passes."
    text = "\n".join(
        [head, *table(run), *run.lines, "Issue #23's targets:", "", *targets(run, loop), took]
    )
    print(text)
    from bench_kv_passes import GPU, Target, measure

    if args.smoke:  # the KV-passes path on a tiny model: two contexts, batch 2
        print(measure(Target("KV passes, smoke", "tiny", SMOKE, "float32", 0, 2, (32, 64))))
    else:
        write_section("Serving engine, CUDA graphs", text, torch.cuda.get_device_name(0))
        if run.left() > 120:
            write_section(GPU.title, measure(GPU), torch.cuda.get_device_name(0))
        else:
            print(
                "KV passes skipped: the run's time budget is spent; run bench_kv_passes.py --gpu-only"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
