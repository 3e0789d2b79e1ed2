"""On an NVIDIA GPU: this engine's scheduling loop against transformers'
``ContinuousBatchingManager`` (one long-lived manager, paged cache sized explicitly, its CUDA
graphs as it decides them) on the same random-weight ~1B Llama: whole batches (prefill plus
64 decode steps) and closed-loop clients with mixed output lengths, in bf16, plus whether the
manager runs the bitsandbytes int8 and NF4 models at all. Prints a markdown section and writes
it to ``--out`` (``make bench`` on a GPU machine puts it in docs/benchmarks.md, section
"Serving engine, GPU"). ``--smoke`` runs the same code on a tiny model on the CPU."""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_gpu import random_checkpoint, setup
from bench_report import write_section

PROMPT_TOKENS = 128
NEW_TOKENS = 64
SHORTEST, LONGEST = 8, 256
MAX_CONTEXT = 1024


def prompt_ids(client: int) -> list[int]:
    return [5 + client % 100] * PROMPT_TOKENS


class Ours:
    """This repository's engine (``TransformersEngine``: slot KV cache, its own scheduler)."""

    name = "this engine"

    def __init__(self, model_dir: Path, quantization: str, dtype: str, gpus: int, batch: int):
        from ridgeline.api import Quantization
        from ridgeline_serving.engine.transformers_engine import TransformersEngine

        self.engine = TransformersEngine(
            model_dir,
            "bench",
            Quantization(quantization),
            dtype,
            gpus,
            MAX_CONTEXT,
            max_batch=batch,
            on_step=self.record,
        )
        self.steps: list[tuple[float, Any]] = []  # (when it ended, StepStats)
        self.engine.scheduler.eos_ids = set()  # random weights: every request runs to its length

    def record(self, stats: Any) -> None:
        self.steps.append((time.perf_counter(), stats))

    def explain(self, begin: float, end: float) -> str:
        """What this engine's steps did in a window: how many carried a prefill chunk, and
        the median step with and without one."""
        steps = [s for t, s in self.steps if begin < t <= end]
        mixed = [s.seconds for s in steps if s.prefill_tokens]
        pure = [s.seconds for s in steps if not s.prefill_tokens]
        rows = statistics.mean(s.decode_tokens for s in steps)
        prefill = statistics.mean(s.prefill_tokens for s in steps if s.prefill_tokens)

        def ms(xs: list[float]) -> str:
            return f"{statistics.median(xs) * 1e3:.1f} ms" if xs else "none"

        return (
            f"{len(steps)} steps, {len(mixed)} with a prefill chunk (mean {prefill:.0f} "
            f"tokens); median step {ms(mixed)} with one, {ms(pure)} without; "
            f"{rows:.0f} rows decoding on average"
        )

    def batch(self, n: int) -> None:
        from ridgeline_serving.engine import GenerationRequest

        reqs = [GenerationRequest(prompt_ids(i), NEW_TOKENS, temperature=0) for i in range(n)]
        self.engine.generate(reqs)

    def submit(self, ids: list[int], n: int, done: Callable[[], None]) -> None:
        from ridgeline_serving.engine import GenerationRequest

        def on_event(event: Any) -> None:
            if event.finish is not None:
                done()

        self.engine.submit(GenerationRequest(ids, n, temperature=0), on_event)

    def close(self) -> None:
        self.engine.close()


class Manager:
    """transformers' ``ContinuousBatchingManager`` on the same model object, fed from one
    collector thread (``request_id_iter`` re-queues other requests' results, which costs
    O(clients) per result)."""

    name = "transformers `ContinuousBatchingManager`"

    def __init__(self, model: Any, batch: int) -> None:
        from transformers import ContinuousBatchingConfig, GenerationConfig

        config = GenerationConfig(
            max_new_tokens=LONGEST, do_sample=False, eos_token_id=-1, pad_token_id=0
        )
        blocks_per_request = -(-(PROMPT_TOKENS + LONGEST) // 256)
        self.cb = ContinuousBatchingConfig(
            num_blocks=batch * blocks_per_request + 16,
            max_batch_tokens=2048,  # this engine's prefill budget per step
            max_requests_per_batch=batch,
        )
        self.model = model
        # the manager picks its own paged attention from the model's (this engine's is not one)
        model.set_attn_implementation("sdpa")
        self.manager = model.init_continuous_batching(
            generation_config=config, continuous_batching_config=self.cb
        )
        self.pending: dict[str, Callable[[], None]] = {}
        self.lock = threading.Lock()
        self.manager.start()
        self.running = True
        self.collector = threading.Thread(target=self._collect, daemon=True)
        self.collector.start()

    def settings(self) -> str:
        """The settings as the manager decided them (CUDA graphs, async batching, attention)."""
        cb = getattr(getattr(self.manager, "batch_processor", None), "cb_config", self.cb)
        keys = ("num_blocks", "max_batch_tokens", "use_cuda_graph", "use_async_batching")
        attn = getattr(self.model.config, "_attn_implementation", "?")
        return ", ".join(f"{k} {getattr(cb, k, '?')}" for k in keys) + f", attention {attn}"

    def _collect(self) -> None:
        while self.running:
            out = self.manager.get_result(timeout=0.1)
            if out is None or not out.is_finished():
                continue
            with self.lock:
                done = self.pending.pop(out.request_id)
            done()

    def submit(self, ids: list[int], n: int, done: Callable[[], None]) -> None:
        with self.lock:  # registered before the result can arrive
            rid = f"r{len(self.pending)}-{time.perf_counter_ns()}"
            self.pending[rid] = done
            self.manager.add_request(ids, request_id=rid, max_new_tokens=n)

    def batch(self, n: int) -> None:
        left = threading.Semaphore(0)
        for i in range(n):
            self.submit(prompt_ids(i), NEW_TOKENS, left.release)
        for _ in range(n):
            if not left.acquire(timeout=300):
                raise TimeoutError("the manager stopped answering")

    def close(self) -> None:
        self.running = False
        self.collector.join()
        self.manager.stop(block=True)
        self.model.destroy_cached_continuous_batching_manager()


def batch_rate(engine: Any, n: int, sync: Callable[[], None]) -> float:
    """Tokens/s of one whole batch: prefill of n prompts, then 64 decode steps; warmed once."""
    engine.batch(n)
    sync()
    start = time.perf_counter()
    engine.batch(n)
    sync()
    return n * NEW_TOKENS / (time.perf_counter() - start)


def mixed_rate(engine: Any, clients: int, window_s: float, why: list[str] | None = None) -> float:
    """Closed-loop clients, output lengths uniform in SHORTEST..LONGEST: tokens/s of the
    requests that complete within the window, once every client is in."""
    stop = threading.Event()
    finished: list[tuple[float, int]] = []
    outstanding = threading.Semaphore(0)

    def client(c: int, rng: random.Random) -> None:
        n = rng.randint(SHORTEST, LONGEST)

        def done() -> None:
            finished.append((time.perf_counter(), n))
            if stop.is_set():
                outstanding.release()
            else:
                client(c, rng)

        engine.submit(prompt_ids(c), n, done)

    for c in range(clients):
        client(c, random.Random(c))
    time.sleep(LONGEST * 0.05)  # past the first requests' ends: steady state
    begin = time.perf_counter()
    time.sleep(window_s)
    end = time.perf_counter()
    stop.set()
    for _ in range(clients):
        outstanding.acquire(timeout=120)
    if why is not None and hasattr(engine, "explain"):
        why.append(f"this engine, {clients} clients: {engine.explain(begin, end)}")
    return sum(n for t, n in finished if begin < t <= end) / (end - begin)


def report(
    product: str, window_s: float, rows: list[tuple[str, str, float, float]], notes: list[str]
) -> str:
    import torch
    import transformers

    lines = [
        f"On {product} (torch {torch.__version__}, transformers {transformers.__version__}). "
        f"Random-weight Llama (TinyLlama-1.1B's shape), greedy, {PROMPT_TOKENS}-token prompts. "
        f"Batch n: n requests of {NEW_TOKENS} new tokens sent at once, timed on the second "
        f"pass. k clients: closed loop, outputs uniform in {SHORTEST}..{LONGEST} tokens, tokens "
        f"of the requests completed within {window_s:.0f} s of steady state.",
        "",
        "| workload | quantization | this engine (tokens/s) | ContinuousBatchingManager "
        "(tokens/s) | manager / this engine |",
        "|---|---|---|---|---|",
    ]
    for w, q, a, b in rows:
        ratio = f"{b / a:.2f}x" if b else "failed"
        lines.append(f"| {w} | {q} | {a:.0f} | {b:.0f} | {ratio} |")
    return "\n".join([*lines, "", *[f"- {n}" for n in notes]])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU")
    parser.add_argument("--out", type=Path, help="also write the section here")
    parser.add_argument("--quantizations", default="none,int8,nf4", help="on a GPU")
    parser.add_argument("--mixed-only", action="store_true", help="this engine, clients only")
    args = parser.parse_args()
    import torch

    where = setup(args.smoke, "bench_gpu_engines")
    if where is None:
        return 0
    gpus, config, dtype, product = where.gpus, where.config, where.dtype, where.product
    batches = [4, 8] if args.smoke else [16, 64, 256]
    clients = [4] if args.smoke else [64, 256]
    window_s = 2.0 if args.smoke else 12.0

    def sync() -> None:
        if gpus:
            torch.cuda.synchronize()

    rows: list[tuple[str, str, float, float]] = []  # workload, quantization, ours, manager
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = random_checkpoint(config, Path(tmp) / "m")
        for q in ["none", "nf4"] if args.smoke else args.quantizations.split(","):
            ours = Ours(model_dir, q, dtype, gpus, max(batches + clients))
            ours_rates: dict[str, float] = {}
            work = [f"batch {b}" for b in (batches if q == "none" else batches[1:2])]
            work = [] if args.mixed_only else work
            work += [f"{c} clients" for c in clients] if q == "none" else []
            for w in work:
                n = int(w.split()[0 if "clients" in w else 1])
                ours_rates[w] = (
                    batch_rate(ours, n, sync)
                    if "batch" in w
                    else mixed_rate(ours, n, window_s, notes)
                )
                print(f"  ours {q} {w}: {ours_rates[w]:.0f} tokens/s", flush=True)
            if args.mixed_only:
                ours.close()
                break
            try:
                started = time.perf_counter()
                manager = Manager(ours.engine.model, max(batches + clients))
                batch_rate(manager, 2, sync)
                notes.append(
                    f"{q}: manager started and warmed in {time.perf_counter() - started:.1f} s "
                    f"({manager.settings()})"
                )
                for w in work:
                    n = int(w.split()[0 if "clients" in w else 1])
                    rate = (
                        batch_rate(manager, n, sync)
                        if "batch" in w
                        else mixed_rate(manager, n, window_s)
                    )
                    print(f"  manager {q} {w}: {rate:.0f} tokens/s", flush=True)
                    rows.append((w, q, ours_rates[w], rate))
                manager.close()
            except Exception as exc:  # say what happened rather than print a figure not measured
                notes.append(f"{q}: the manager failed: {type(exc).__name__}: {exc}"[:400])
                rows += [(w, q, ours_rates[w], 0.0) for w in work]
            ours.close()
            del ours
            if gpus:
                torch.cuda.empty_cache()
            if args.out:  # what is measured so far, should a later format not finish
                args.out.write_text(report(product, window_s, rows, notes) + "\n")
    text = report(product, window_s, rows, notes)
    print(text)
    if not args.out and not args.smoke:
        write_section("Serving engine, GPU", text, accelerator=product)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
