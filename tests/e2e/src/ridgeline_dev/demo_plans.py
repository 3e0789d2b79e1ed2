"""`make plans`: plan every example against examples/pools.yaml.

The examples name s3:// and hf:// URIs that this machine cannot reach, so each is planned
against a local, zero-filled sparse copy of the same architecture (built from the public
config.json in examples/models/), read through the same shape reader: the safetensors headers
give the exact parameter count. (`ridgeline plan --model-uri examples/models/NAME` plans from
the config alone, with the count estimated from the architecture.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ridgeline.cli import main as ridgeline
from ridgeline_dev.checkpoints import write_skeleton

EXAMPLE_MODELS = {
    "llama-8b.yaml": "llama-3.1-8b",
    "llama-70b-nf4.yaml": "llama-3.1-70b",
    "qwen-batch.yaml": "qwen2-7b",
    "tiny-cpu.yaml": "tiny-llama",
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True)
    args = parser.parse_args()
    worst = 0
    for manifest, model in EXAMPLE_MODELS.items():
        root = args.models / model
        if not (root / "config.json").exists():
            config = json.loads((args.examples / "models" / model / "config.json").read_text())
            write_skeleton(config, root, shards=4 if "70b" in model else 1)
        command = [
            "plan",
            str(args.examples / manifest),
            "--pools",
            str(args.examples / "pools.yaml"),
            "--model-uri",
            str(root),
        ]
        print(f"$ ridgeline {' '.join(command)}\n", flush=True)
        worst = max(worst, ridgeline(command))
        print("\n" + "-" * 100 + "\n", flush=True)
    return worst


if __name__ == "__main__":
    raise SystemExit(main())
