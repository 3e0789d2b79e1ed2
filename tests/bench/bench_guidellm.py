"""guidellm, a real benchmarking client, run unchanged against `ridgeline serve` (a tiny
random-weight model on this machine's CPU). guidellm fixes every output's length by sending
`ignore_eos: true` with `max_tokens` (as vLLM's `bench serve` does); a random model reaches its
end-of-sequence token early, so this fails unless the engine honours `ignore_eos`.

guidellm lives in its own virtual environment (.cache/guidellm, pinned below) so that its pins
never touch the project's. The run: concurrent streams, synthetic prompts of PROMPT_TOKENS
tokens (guidellm counts them with the model's own tokenizer), OUTPUT_TOKENS tokens asked of
each. It must end with zero errors and every output exactly OUTPUT_TOKENS long; its TTFT and
inter-token latency go to docs/benchmarks.md (section "guidellm against ridgeline serve").
Exits 1 when either check fails."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_report import write_section
from bench_serve import start_serve

GUIDELLM = "guidellm==0.8.1"
VENV = Path(__file__).resolve().parents[2] / ".cache" / "guidellm"
MODEL = "local-tiny"
STREAMS = int(os.environ.get("BENCH_GUIDELLM_STREAMS", "8"))
REQUESTS = int(os.environ.get("BENCH_GUIDELLM_REQUESTS", "64"))
PROMPT_TOKENS = 32
OUTPUT_TOKENS = 24
MANIFEST = """\
apiVersion: ridgeline.dev/v1alpha1
kind: InferenceModel
metadata: {{name: {name}}}
spec:
  model: {{uri: "{uri}"}}
  workload: {{maxContextTokens: 256}}
  accelerators: [cpu]
"""


def guidellm() -> Path:
    """guidellm's executable in its own venv, installed on first use."""
    exe = VENV / "bin" / "guidellm"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, GUIDELLM], check=True)
    return exe


def serve(work: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`ridgeline serve` on the tiny model from a local directory: the process, its base URL
    and the model's directory (guidellm counts tokens with its tokenizer)."""
    from ridgeline_dev.tiny_model import write_tiny_model

    model_dir = write_tiny_model(work / "tiny")
    manifest = work / "model.yaml"
    manifest.write_text(MANIFEST.format(name=MODEL, uri=model_dir.as_uri()))
    proc, base = start_serve(manifest, work)
    return proc, base, model_dir


def run_guidellm(exe: Path, base: str, tokenizer: Path, out: Path) -> None:
    cmd = [
        str(exe), "run",
        "--backend", f"kind=openai_http,target={base},model={MODEL}",
        "--data", f"kind=synthetic_text,prompt_tokens={PROMPT_TOKENS},output_tokens={OUTPUT_TOKENS}",
        "--tokenizer", f"kind=huggingface_auto,model={tokenizer}",
        "--profile", f"kind=concurrent,streams={STREAMS}",
        "--constraint", f"kind=max_requests,count={REQUESTS}",
        "--output", f"kind=json,path={out}",
        "--disable-progress",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=900)


def requests_of(report: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The successful and the failed (errored or incomplete) requests of the one benchmark."""
    (bench,) = report["benchmarks"]
    reqs = bench["requests"]
    return list(reqs["successful"]), [*reqs["errored"], *reqs.get("incomplete", [])]


def output_tokens(request: dict[str, Any]) -> int:
    return int(request["output_metrics"]["text_tokens"])


def ms(request: dict[str, Any], key: str) -> float:
    return float(request[key])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    exe = guidellm()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        proc, base, model_dir = serve(work)
        try:
            run_guidellm(exe, base, model_dir, work / "guidellm.json")
        finally:
            proc.terminate()
            proc.wait(timeout=120)
        report = json.loads((work / "guidellm.json").read_text())
    ok, failed = requests_of(report)
    lengths = [output_tokens(r) for r in ok]
    wrong = [n for n in lengths if n != OUTPUT_TOKENS]
    ttft = [ms(r, "time_to_first_token_ms") for r in ok]
    itl = [ms(r, "inter_token_latency_ms") for r in ok if r.get("inter_token_latency_ms")]
    met = not failed and not wrong and len(ok) == REQUESTS
    lines = [
        f"guidellm {GUIDELLM.split('==')[1]}, unchanged (its own venv), against `ridgeline serve` "
        f"with the tiny random-weight model on this machine's CPU: {STREAMS} concurrent streams, "
        f"{REQUESTS} requests, synthetic prompts of {PROMPT_TOKENS} tokens, {OUTPUT_TOKENS} "
        "output tokens asked of each (guidellm sends `ignore_eos: true` with `max_tokens`).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| requests completed / errored | {len(ok)} / {len(failed)} |",
        f"| output lengths | {sorted(set(lengths))} (asked {OUTPUT_TOKENS}; {len(wrong)} differ) |",
        f"| time to first token p50 / p99 | {pct(ttft, 0.5):.0f} / {pct(ttft, 0.99):.0f} ms |",
        f"| inter-token latency p50 / p99 | {pct(itl, 0.5):.1f} / {pct(itl, 0.99):.1f} ms |",
        f"| mean inter-token latency | {statistics.fmean(itl):.1f} ms |",
        "",
        f"Zero errors and exact output lengths: **{'met' if met else 'not met'}**.",
    ]
    text = "\n".join(lines)
    print(text)
    write_section("guidellm against ridgeline serve", text)
    if not met:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
