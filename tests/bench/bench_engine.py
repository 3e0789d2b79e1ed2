"""Continuous batching on this machine (CPU), all figures from one run: mixed output lengths
against today's static engine and transformers' ContinuousBatchingManager, head-of-line
blocking, and the engine's own work per step with a stub model. Writes docs/benchmarks.md
(section "Serving engine, CPU")."""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench_report import write_section
from static_engine import StaticEngine

from ridgeline.api import Quantization
from ridgeline_dev.tiny_model import write_tiny_model
from ridgeline_serving.engine import GenerationRequest, SequenceEvent, StepStats, ranked_host
from ridgeline_serving.engine.ranked import select_top
from ridgeline_serving.engine.scheduler import Limits, Scheduler
from ridgeline_serving.engine.transformers_engine import TransformersEngine

CLIENTS = 64
ROUNDS = 2  # requests per client
PAIRS = 3
SHORTEST, LONGEST = 8, 256


def workload(seed: int = 0) -> list[list[int]]:
    """Output lengths per client, uniform in SHORTEST..LONGEST."""
    rng = random.Random(seed)
    return [[rng.randint(SHORTEST, LONGEST) for _ in range(ROUNDS)] for _ in range(CLIENTS)]


def prompt(engine: TransformersEngine, client: int, round_: int) -> list[int]:
    return engine.encode_prompt(f"client {client} asks question {round_} about the ridge")


def static_run(engine: TransformersEngine, lengths: list[list[int]]) -> tuple[float, float]:
    """``@serve.batch`` with closed-loop clients: all 64 answers of a batch return together, so
    every batch holds all 64 clients and lasts as long as its longest request."""
    static = StaticEngine(engine.model, engine.tokenizer, set(), engine.max_context_tokens)
    start, cpu = time.perf_counter(), time.process_time()
    for r in range(ROUNDS):
        reqs = [
            GenerationRequest(prompt(engine, c, r), lengths[c][r], temperature=0)
            for c in range(CLIENTS)
        ]
        static.generate(reqs)
    return time.perf_counter() - start, time.process_time() - cpu


def steady_state(
    one: Callable[[list[int], int], None], engine: Any, window_s: float
) -> tuple[float, float]:
    """64 clients send requests back to back (lengths uniform in SHORTEST..LONGEST); tokens/s
    of the requests that complete within ``window_s``, counted once every client has sent its
    first request and stopped before the drain: (per wall second, per CPU second)."""
    stop = threading.Event()
    done: list[tuple[float, int]] = []
    started = threading.Barrier(CLIENTS + 1)

    def client(c: int) -> None:
        rng = random.Random(c)
        started.wait()
        r = 0
        while not stop.is_set():
            n = rng.randint(SHORTEST, LONGEST)
            one(prompt(engine, c, r), n)
            done.append((time.perf_counter(), n))
            r += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    started.wait()
    time.sleep(1.0)  # every client is in
    begin, cpu = time.perf_counter(), time.process_time()
    time.sleep(window_s)
    end, cpu = time.perf_counter(), time.process_time() - cpu
    stop.set()
    for t in threads:
        t.join()
    tokens = sum(n for t, n in done if begin < t <= end)
    return tokens / (end - begin), tokens / cpu


def continuous_run(engine: TransformersEngine, window_s: float) -> tuple[float, float]:
    """The clients as callbacks: a client's next request is submitted from its last event, so
    no client thread stands between a finished sequence and the next (the static engine's
    batches run back to back too)."""
    stop = threading.Event()
    done: list[tuple[float, int]] = []
    prompts = [[prompt(engine, c, r) for r in range(4)] for c in range(CLIENTS)]

    def client(c: int, rng: random.Random, r: int) -> None:
        if stop.is_set():
            return
        n = rng.randint(SHORTEST, LONGEST)

        def on_event(event: SequenceEvent) -> None:
            if event.finish is not None:
                assert event.completion_tokens == n
                done.append((time.perf_counter(), n))
                client(c, rng, r + 1)

        engine.submit(GenerationRequest(prompts[c][r % 4], n, temperature=0), on_event)

    for c in range(CLIENTS):
        client(c, random.Random(c), 0)
    time.sleep(1.0)  # every client is in
    begin, cpu = time.perf_counter(), time.process_time()
    time.sleep(window_s)
    end, cpu = time.perf_counter(), time.process_time() - cpu
    stop.set()
    while engine.stats().running or engine.stats().waiting:
        time.sleep(0.05)
    tokens = sum(n for t, n in done if begin < t <= end)
    return tokens / (end - begin), tokens / cpu


def transformers_cb_run(engine: TransformersEngine, window_s: float) -> tuple[float, float]:
    """transformers' ContinuousBatchingManager, one long-lived manager, cache sized explicitly."""
    from transformers import ContinuousBatchingConfig, GenerationConfig

    config = GenerationConfig(
        max_new_tokens=LONGEST, do_sample=False, eos_token_id=-1, pad_token_id=0
    )
    cb = ContinuousBatchingConfig(
        num_blocks=CLIENTS * 2, page_size=256, max_batch_tokens=512, max_requests_per_batch=CLIENTS
    )
    # the manager picks its own paged attention from the model's (this engine's is not one)
    engine_attention = engine.model.config._attn_implementation
    engine.model.set_attn_implementation("sdpa")
    manager = engine.model.init_continuous_batching(
        generation_config=config, continuous_batching_config=cb
    )
    manager.start()
    try:
        manager.add_request([5, 6, 7], max_new_tokens=2)  # warm up
        while not (r := manager.get_result(timeout=30)) or not r.is_finished():
            pass

        def one(ids: list[int], n: int) -> None:
            rid = manager.add_request(ids, max_new_tokens=n)
            for out in manager.request_id_iter(rid):
                if out.is_finished():
                    assert len(out.generated_tokens) == n
                    return

        return steady_state(one, engine, window_s)
    finally:
        manager.stop(block=True)
        engine.model.destroy_cached_continuous_batching_manager()
        engine.model.set_attn_implementation(engine_attention)


def bench_mixed(engine: TransformersEngine) -> list[str]:
    lengths = workload()
    tokens = sum(map(sum, lengths))
    engine.scheduler.eos_ids = set()  # random weights: every request runs to its length
    # Alternating pairs: the machine is shared, and its load drifts within a run. Tokens per
    # CPU second of this process are the figure load disturbs least.
    pairs = []
    kv = KvWatch(engine)
    for _ in range(PAIRS):
        wall, cpu = static_run(engine, lengths)
        with kv:
            pairs.append(((tokens / wall, tokens / cpu), continuous_run(engine, wall)))
    cpu_ratios = sorted(c[1] / s[1] for s, c in pairs)
    wall_ratios = sorted(c[0] / s[0] for s, c in pairs)
    median = cpu_ratios[len(cpu_ratios) // 2]
    static_rate, continuous_rate = next((s, c) for s, c in pairs if c[1] / s[1] == median)
    rates = {"today's static engine (`@serve.batch`, batch 64)": static_rate}
    rates["continuous batching (this engine, batch up to 64)"] = continuous_rate
    name = "transformers `ContinuousBatchingManager` (num_blocks 128, max_batch_tokens 512)"
    try:
        rates[name] = transformers_cb_run(engine, tokens / static_rate[0])
    except Exception as exc:  # say what happened rather than print a number we did not measure
        rates[f"{name}: failed ({type(exc).__name__}: {exc})"] = (0.0, 0.0)
    lines = [
        f"Mixed lengths: {CLIENTS} closed-loop clients, outputs uniform in {SHORTEST}..{LONGEST} "
        "tokens, tiny Llama (2 layers, hidden 64), float32, greedy, one intra-op thread. The "
        f"static engine serves {ROUNDS} rounds of 64 requests ({tokens} tokens; all 64 answers "
        "of a batch return together, so every batch holds all 64 clients and lasts as long as "
        "its longest request). The continuous engines run the same clients sending requests "
        "back to back (this engine's clients are callbacks that submit the next request from "
        "the last event; `ContinuousBatchingManager`'s are threads); tokens of the requests "
        "completed within the same wall time, counted "
        "once all 64 clients are in (steady state, no drain). Tokens per CPU second of the "
        "benchmark process (clients included) are what the shared machine's load disturbs "
        f"least; {PAIRS} alternating static / continuous pairs, the pair with the median CPU "
        "ratio shown. All CPU ratios: "
        + ", ".join(f"{r:.2f}x" for r in cpu_ratios)
        + "; all wall-clock ratios: "
        + ", ".join(f"{r:.2f}x" for r in wall_ratios)
        + ".",
        "",
        "| engine | tokens/s (wall) | tokens per CPU second | vs static (CPU) |",
        "|---|---|---|---|",
    ]
    for label, (wall_rate, cpu_rate) in rates.items():
        if cpu_rate:
            lines.append(
                f"| {label} | {wall_rate:.0f} | {cpu_rate:.0f} | {cpu_rate / static_rate[1]:.2f}x |"
            )
        else:
            lines.append(f"| {label} | | | |")
    return [*lines, "", kv.line()]


class KvWatch:
    """This engine's KV buffers at every step of the continuous runs: their size against the
    plan's KV tokens, and how often they were reallocated."""

    def __init__(self, engine: TransformersEngine) -> None:
        self.engine = engine
        self.batch = engine.scheduler.runner.running  # type: ignore[attr-defined]
        self.cells: list[int] = []
        self.buffers: set[int] = set()

    def __enter__(self) -> None:
        self.saved = self.engine.scheduler.on_step
        self.engine.scheduler.on_step = self.step

    def __exit__(self, *exc: object) -> None:
        self.engine.scheduler.on_step = self.saved

    def step(self, stats: StepStats) -> None:
        self.cells.append(self.batch.slots * self.batch.columns)
        self.buffers.update(id(layer.key_buffer) for layer in self.batch.layers[:1])
        if self.saved is not None:
            self.saved(stats)

    def line(self) -> str:
        planned = self.engine.limits.kv_tokens
        return (
            f"KV buffers of this engine over its continuous runs: at most {max(self.cells)} "
            f"token slots ({self.batch.slots} slots x {self.batch.columns} columns) against the "
            f"plan's {planned} (batch x context), {len(self.buffers)} allocation(s) over "
            f"{len(self.cells)} steps. Buffers that grew as the batch did reached 2.5-2.7x the "
            "plan with mixed lengths (`tests/serving/test_engine.py` holds them to it)."
        )


def bench_head_of_line(engine: TransformersEngine) -> list[str]:
    engine.scheduler.eos_ids = set()
    done = [threading.Event() for _ in range(16)]
    for i in range(16):
        req = GenerationRequest(engine.encode_prompt(f"long {i}"), 256, temperature=0)
        engine.submit(req, lambda e, i=i: done[i].set() if e.finish else None)
    while engine.stats().steps < 2 or engine.stats().running < 16:
        time.sleep(0.001)
    time.sleep(0.05)  # well into decoding
    # Submitted from the engine's own step hook, so that it arrives exactly at a step
    # boundary and the count does not depend on how this thread is scheduled.
    marks: dict[str, float] = {}
    short_done = threading.Event()

    def on_short(event: Any) -> None:
        if event.finish:
            marks["finished_step"] = engine.stats().steps + 1  # called within that step
            marks["finished_at"] = time.perf_counter()
            short_done.set()

    def arrive(stats: Any) -> None:
        engine.scheduler.on_step = None
        marks["step"], marks["at"] = engine.stats().steps, time.perf_counter()
        engine.submit(GenerationRequest(engine.encode_prompt("short"), 4, temperature=0), on_short)

    engine.scheduler.on_step = arrive
    short_done.wait()
    steps = int(marks["finished_step"] - marks["step"])
    seconds = marks["finished_at"] - marks["at"]
    longs_done = sum(d.is_set() for d in done)
    for d in done:
        d.wait()
    return [
        "Head-of-line: a 4-token request sent while 16 requests of 256 tokens decode:",
        "",
        f"- it completed {steps} engine steps ({seconds * 1000:.0f} ms) after it arrived: at "
        "most one step waiting for other arrivals to share its prefill (`JOIN_WAIT_STEPS`), 1 "
        "prefill step (which yields its first token) and 3 decode steps; target: within its "
        f"prefill + 5 steps (6): {'met' if steps <= 6 else 'NOT met'}",
        f"- long requests finished meanwhile: {longs_done} of 16; the static engine made it wait "
        "for the whole batch (256 steps).",
    ]


STUB_VOCAB = 1024


class StubRunner:
    """A model whose forward costs nothing: fixed random logits (vocabulary 1,024)."""

    def __init__(self, vocab: int = STUB_VOCAB) -> None:
        self.device = torch.device("cpu")
        self.logits = torch.randn(4096, vocab)
        self.rows = 0

    def start(self, prompts: list[list[int]]) -> Any:
        runner = self

        class Job:
            rows = len(prompts)

            def step(self, budget: int) -> tuple[int, torch.Tensor]:
                return sum(map(len, prompts)), runner.logits[: len(prompts)]

        return Job()

    def join(self, group: Any) -> None:
        self.rows += group.rows

    def decode(self, tokens: list[int]) -> torch.Tensor:
        return self.logits[: len(tokens)]

    def keep(self, rows: list[int]) -> None:
        self.rows = len(rows)


def stub_tokenizer(tokenizer: Any) -> Any:
    """The tiny model's tokenizer grown to the stub's vocabulary (added tokens), so that every
    logit of the stub is a token the engine may draw."""
    grown = copy.deepcopy(tokenizer)
    grown.add_tokens([f"<stub{i}>" for i in range(STUB_VOCAB - len(grown))])
    assert len(grown) == STUB_VOCAB
    return grown


OVERHEAD_CONFIGS: dict[str, dict[str, float]] = {
    "greedy": {"temperature": 0.0},
    "temperature 1": {"temperature": 1.0},
    "temperature 0.8, top_p 0.9, seeded": {"temperature": 0.8, "top_p": 0.9},
    "temperature 0.8, top_p 0.9, top_k 50, seeded": {
        "temperature": 0.8,
        "top_p": 0.9,
        "top_k": 50,
    },
}


def overhead_step(tokenizer: Any, params: dict[str, float], seeded: bool) -> tuple[float, float]:
    """Median decode step of 256 stub rows: (wall seconds, CPU seconds of the whole process,
    every intra-op thread included)."""
    walls: list[float] = []
    cpus: list[float] = []

    def on_step(stats: StepStats) -> None:
        walls.append(stats.seconds)
        cpus.append(time.process_time())  # differences are the steps' CPU, all threads

    limits = Limits(
        max_batch=256, kv_tokens=256 * 2048, prefill_tokens=2048, max_context_tokens=2048
    )
    sched = Scheduler(StubRunner(), tokenizer, set(), limits, on_step)
    reqs = [
        GenerationRequest([5, 6, 7], 200, seed=i if seeded else None, **params)  # type: ignore[arg-type]
        for i in range(256)
    ]
    sched.generate(reqs)
    sched.close()
    cpu = statistics.median(b - a for a, b in itertools.pairwise(cpus[1:]))
    return statistics.median(walls[1:]), cpu


OVERHEAD_ROUNDS = 5


def bench_overhead(engine: TransformersEngine) -> list[str]:
    tokenizer = stub_tokenizer(engine.tokenizer)
    replica_threads = os.cpu_count() or 1
    lines = [
        "Engine work outside the forward (scheduling, sampling, detokenization, events), stub "
        "model with vocabulary 1,024, batch 256, median decode step: wall clock, and CPU time of "
        "the process (every thread; on this shared 2-core machine the wall clock also counts "
        "the time other processes hold the cores). With one intra-op thread, as the rest of "
        f"this section runs, and with {replica_threads}, as a CPU replica on this machine runs "
        "(Ray sets torch's threads to the replica's CPUs, the pod's cores). Every row is "
        f"measured {OVERHEAD_ROUNDS} times, the rows interleaved, and the fastest run shown "
        "(this machine's neighbours slow a whole run by up to a third; the work is the same) "
        "beside the range of the runs:",
        "",
        "| sampling | intra-op threads | ms per step (wall) | ms per step (CPU, all threads) | "
        "runs (wall) | target <= 3 ms (wall) |",
        "|---|---|---|---|---|---|",
    ]
    for threads in sorted({1, replica_threads}):
        torch.set_num_threads(threads)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in OVERHEAD_CONFIGS}
        for _ in range(OVERHEAD_ROUNDS):
            for name, params in OVERHEAD_CONFIGS.items():
                runs[name].append(overhead_step(tokenizer, params, "seeded" in name))
        for name, measured in runs.items():
            wall, cpu = min(measured)
            walls = sorted(w for w, _ in measured)
            verdict = "met" if wall <= 3e-3 else "NOT met"
            lines.append(
                f"| {name} | {threads} | {wall * 1000:.2f} | {cpu * 1000:.2f} | "
                f"{walls[0] * 1000:.2f}-{walls[-1] * 1000:.2f} | {verdict} |"
            )
    torch.set_num_threads(1)
    logits = StubRunner().logits[:256]

    def ms(work: Callable[[], object]) -> float:
        return statistics.median(timed(work) for _ in range(50)) * 1000

    topk = ms(lambda: logits.topk(50, dim=-1, sorted=False))
    grouped = ms(lambda: select_top(logits, 50))
    packed = ms(lambda: ranked_host._best(logits, 50))
    whole = ms(lambda: logits.sort(dim=-1, descending=True))
    lines += [
        "",
        f"The stub's logits are random over all {STUB_VOCAB} tokens: the tiny model's "
        f"tokenizer ({len(engine.tokenizer)} tokens) with added tokens up to {STUB_VOCAB}, "
        "as the engine draws only ids its tokenizer has. Rows with top_p alone (what OpenAI "
        "clients send) sample their nucleus by rejection on the CPU (`engine/nucleus.py`): "
        "no ranking; ranking the whole rows, as the engine did before for them "
        f"(`torch.sort`, 256 x 1,024, one thread), takes {whole:.2f} ms alone here. Rows with "
        "a top_k rank their k best tokens only: `torch.topk` over the whole rows takes "
        f"{topk:.2f} ms for k = 50 (its CPU kernel, nth_element over (value, index) pairs, "
        "costs about 10 ns a token whatever k); selecting in two rounds, the maxima of groups "
        "of tokens and then the tokens of the k best groups, takes "
        f"{grouped:.2f} ms with topk for each round (`ranked.select_top`, vocabularies above "
        f"4,096) and {packed:.2f} ms sorting packed (value, id) keys with numpy's SIMD sort "
        "for each round, the result already in order (`ranked_host`, up to 4,096). The ranked "
        "arithmetic after it runs on numpy arrays on the CPU: on 256 x 50 arrays torch's cost "
        "per operation was most of it.",
    ]
    return lines


def timed(work: Callable[[], object]) -> float:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    # One intra-op thread: two spin against each other on a loaded 2-core machine.
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="ridgeline-bench-") as tmp:
        model_dir = write_tiny_model(Path(tmp) / "tiny")
        engine = TransformersEngine(
            model_dir, "tiny", Quantization.NONE, "float32", 0, 512, max_batch=CLIENTS
        )
        try:
            lines = [
                *bench_mixed(engine),
                "",
                *bench_head_of_line(engine),
                "",
                *bench_overhead(engine),
            ]
        finally:
            engine.close()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines += [
        "",
        f"Load average when the run ended (1, 5, 15 min): {load}, on a machine shared with other "
        "jobs: wall-clock figures move by tens of percent between runs; compare rows of one run.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("Serving engine, CPU", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
