"""Hostile clients against `ridgeline serve` (a tiny model on this machine's CPU), all at once:
slow bodies (one byte of a 1 MB body), huge prompts (50 MB), clients that leave mid-answer,
poisoned parameters; well-behaved clients (retrying on 429 as the openai client does) and a
/health probe run beside them. Prints and writes to docs/benchmarks.md (section "Hostile
clients"): /health latency under attack, the server's memory before and after, and how the
well-behaved requests fared."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
from bench_report import write_section
from bench_serve import start_serve

ATTACK_S = float(os.environ.get("BENCH_ATTACK_S", "40"))
MODEL = "local-tiny"
MANIFEST = """\
apiVersion: ridgeline.dev/v1alpha1
kind: InferenceModel
metadata: {{name: {name}}}
spec:
  model: {{uri: "{uri}"}}
  workload: {{maxContextTokens: 512}}
  accelerators: [cpu]
"""


def rss_mib(proc: psutil.Process) -> tuple[float, float]:
    """The whole server's resident memory (the CLI, Ray and the replica) and the replica's."""
    total = replica = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            rss = p.memory_info().rss / 2**20
            total += rss
            if "ServeReplica" in " ".join(p.cmdline()):
                replica += rss
        except psutil.Error:
            continue
    return total, replica


_local = threading.local()


def client() -> httpx.Client:
    """One client per thread: a new one per request would spend the attacker's CPU (and GIL)
    on TLS contexts instead of on the server."""
    if not hasattr(_local, "client"):
        _local.client = httpx.Client()
    return _local.client  # type: ignore[no-any-return]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Attack:
    def __init__(self, base: str) -> None:
        self.base = base
        self.host, port = base.removeprefix("http://").split(":")
        self.port = int(port)
        self.stop = threading.Event()
        self.counts: dict[str, dict[str, int]] = {}
        self.lock = threading.Lock()

    def count(self, kind: str, outcome: str) -> None:
        with self.lock:
            bucket = self.counts.setdefault(kind, {})
            bucket[outcome] = bucket.get(outcome, 0) + 1

    def loop(self, kind: str, once: Callable[[], str]) -> None:
        while not self.stop.is_set():
            try:
                self.count(kind, once())
            except (httpx.HTTPError, OSError) as exc:
                self.count(kind, type(exc).__name__)

    def slow_body(self) -> str:
        with socket.create_connection((self.host, self.port), timeout=120) as sock:
            sock.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000000\r\n\r\n{"
            )
            while not self.stop.is_set():
                sock.settimeout(1)
                try:
                    head = sock.recv(64)
                except TimeoutError:
                    try:
                        sock.sendall(b" ")  # one byte a second
                    except OSError:
                        return "closed"
                    continue
                return head.split(b" ")[1].decode() if head else "closed"
        return "stopped"

    def huge_prompt(self) -> str:
        prompt = "a" * 50_000_000
        body = {"model": MODEL, "prompt": prompt, "max_tokens": 4}
        return str(client().post(self.base + "/v1/completions", json=body, timeout=60).status_code)

    def long_prompt(self) -> str:  # under the body limit, over what the context can hold
        body = {"model": MODEL, "prompt": "b " * 200_000, "max_tokens": 4}
        return str(client().post(self.base + "/v1/completions", json=body, timeout=60).status_code)

    def leave(self) -> str:
        body = {"model": MODEL, "prompt": "go on", "max_tokens": 400, "temperature": 0}
        try:
            client().post(self.base + "/v1/completions", json=body, timeout=0.3)
        except httpx.TimeoutException:
            return "left"
        return "answered"

    def poison(self) -> str:
        model = f'"model": "{MODEL}"'
        bodies = [
            f'{{{model}, "prompt": "x", "seed": {2**70}}}',
            f'{{{model}, "prompt": "\\ud800"}}',  # a lone surrogate
            f'{{{model}, "prompt": ""}}',
            f'{{{model}, "prompt": "x", "max_tokens": -1}}',
            f'{{{model}, "prompt": "x", "best_of": 3}}',
            f'{{{model}, "prompt": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[',
        ]
        codes = set()
        for body in bodies:
            resp = client().post(
                self.base + "/v1/completions",
                content=body.encode(),
                headers={"content-type": "application/json"},
                timeout=60,
            )
            codes.add(str(resp.status_code))
        return "/".join(sorted(codes))


def well_behaved(base: str, stop: threading.Event, out: list[tuple[bool, float]]) -> None:
    body = {"model": MODEL, "prompt": "the ridge", "max_tokens": 16, "temperature": 0}
    while not stop.is_set():
        began = time.monotonic()
        ok = False
        while time.monotonic() - began < 60:
            try:
                resp = client().post(base + "/v1/completions", json=body, timeout=60)
            except httpx.HTTPError:
                break
            if resp.status_code != 429:
                ok = resp.status_code == 200
                break
            time.sleep(float(resp.headers.get("retry-after", "1")))
        out.append((ok, time.monotonic() - began))


def good_side(base: str, stop: Any, results: Any) -> None:
    """Well-behaved clients and the /health probe, in a process of their own: what they see is
    the server's doing, not the attackers' threads' contention in one interpreter."""
    done = threading.Event()
    health: list[float] = []
    good: list[tuple[bool, float]] = []
    threads = [threading.Thread(target=well_behaved, args=(base, done, good)) for _ in range(4)]
    threads.append(threading.Thread(target=probe_health, args=(base, done, health)))
    for thread in threads:
        thread.start()
    stop.wait()
    done.set()
    for thread in threads:
        thread.join(timeout=120)
    results.put((health, good))


def probe_health(base: str, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        began = time.monotonic()
        try:
            client().get(base + "/health", timeout=30).raise_for_status()
            out.append(time.monotonic() - began)
        except httpx.HTTPError:
            out.append(float("inf"))
        time.sleep(0.1)


def serve(work: Path, stack: contextlib.ExitStack) -> tuple[subprocess.Popen[bytes], str]:
    from ridgeline_dev.s3server import running_minio
    from ridgeline_dev.tiny_model import upload_dir, write_tiny_model

    s3 = stack.enter_context(running_minio(work / "minio"))
    os.environ.update(s3.env())
    uri = upload_dir(
        write_tiny_model(work / "tiny"), "models", "tiny", s3.endpoint, s3.access_key, s3.secret_key
    )
    manifest = work / "model.yaml"
    manifest.write_text(MANIFEST.format(name=MODEL, uri=uri))
    return start_serve(manifest, work)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        proc, base = serve(Path(tmp), stack)
        server = psutil.Process(proc.pid)
        try:
            lines = run(base, server)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)
    print("\n".join(lines))
    write_section("Hostile clients", "\n".join(lines))


def run(base: str, server: psutil.Process) -> list[str]:
    idle: list[tuple[bool, float]] = []
    for _ in range(10):
        began = time.monotonic()
        ok = (
            client()
            .post(
                base + "/v1/completions",
                json={"model": MODEL, "prompt": "the ridge", "max_tokens": 16, "temperature": 0},
                timeout=60,
            )
            .is_success
        )
        idle.append((ok, time.monotonic() - began))
    time.sleep(2)
    before = rss_mib(server)
    attack = Attack(base)
    workers: list[threading.Thread] = []
    plan: list[tuple[str, Callable[[], str], int]] = [
        ("slow body (1 byte/s of 1 MB)", attack.slow_body, 70),
        ("50 MB prompt", attack.huge_prompt, 2),
        ("prompt over the context (400 kB)", attack.long_prompt, 2),
        ("leaves after 0.3 s", attack.leave, 10),
        ("poisoned parameters", attack.poison, 2),
    ]
    for kind, once, n in plan:
        workers += [threading.Thread(target=attack.loop, args=(kind, once)) for _ in range(n)]
    spawn = multiprocessing.get_context("spawn")
    stop, results = spawn.Event(), spawn.Queue()
    good_proc = spawn.Process(target=good_side, args=(base, stop, results))
    good_proc.start()
    for worker in workers:
        worker.start()
    peak = before
    ends = time.monotonic() + ATTACK_S
    while time.monotonic() < ends:
        now = rss_mib(server)
        peak = (max(peak[0], now[0]), max(peak[1], now[1]))
        time.sleep(1)
    attack.stop.set()
    stop.set()
    health, good = results.get(timeout=180)
    good_proc.join(timeout=30)
    for worker in workers:
        worker.join(timeout=120)
    load = os.getloadavg()[0]
    time.sleep(5)
    after = rss_mib(server)
    served = [s for ok, s in good if ok]
    idle_s = [s for ok, s in idle if ok]
    lines = [
        f"`ridgeline serve` with a tiny model (context 512) on this machine's CPU, attacked for "
        f"{ATTACK_S:.0f} s by all of these at once (threads; each repeats until the end):",
        "",
        "| attack | clients | outcomes |",
        "|---|---:|---|",
    ]
    for kind, _, n in plan:
        outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(attack.counts.get(kind, {}).items()))
        lines.append(f"| {kind} | {n} | {outcomes} |")
    lines += [
        "",
        "| figure | value |",
        "|---|---:|",
        f"| /health probes (every 0.1 s) | {len(health)} |",
        f"| /health latency p50 / p99 / max | {1e3 * pct(health, 0.5):.0f} / "
        f"{1e3 * pct(health, 0.99):.0f} / {1e3 * max(health):.0f} ms |",
        f"| well-behaved requests (4 clients, 16 tokens, retry on 429) succeeded | "
        f"{len(served)} of {len(good)} |",
        f"| their latency p50 / p99, retries included | {pct(served, 0.5):.2f} / "
        f"{pct(served, 0.99):.2f} s |",
        f"| the same request on the idle server, p50 | {statistics.median(idle_s):.2f} s |",
        f"| server RSS before / peak / after (all processes) | {before[0]:.0f} / {peak[0]:.0f} / "
        f"{after[0]:.0f} MiB |",
        f"| replica RSS before / peak / after | {before[1]:.0f} / {peak[1]:.0f} / "
        f"{after[1]:.0f} MiB |",
        "",
        f"The machine: a 2-core box shared with other work (load average {load:.1f} at the end "
        "of the attack). The attackers and the well-behaved clients run in separate processes.",
        "A request counts against the replica's batch + queue places once its body is "
        "complete: slow bodies take none; past a 1 s grace 4 of them keep the slow-body slots "
        "until their 10 s body timeout (408) and the rest are cut off with 408 at once, so "
        "complete requests are admitted meanwhile (429 with `Retry-After` only when batch + "
        "queue hold complete requests). A 50 MB prompt is refused "
        "from its `Content-Length` (413) and a prompt over the context before tokenizing (400), "
        "so neither leaves memory behind in the replica. `/health` goes through Serve's proxy "
        "and router like every request: under a flood at the proxy's capacity it waits in line "
        "with the 429s (Serve's own `/-/healthz` is answered by the proxy).",
    ]
    return lines


if __name__ == "__main__":
    main()
