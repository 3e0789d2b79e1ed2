"""``ridgeline-dev``: cluster up|down|status, fleet POOLS.yaml, toolchain."""

from __future__ import annotations

import sys


def main() -> int:
    commands = {
        "cluster": "ridgeline_dev.cluster",
        "fleet": "ridgeline_dev.fleet",
        "toolchain": "ridgeline_dev.toolchain",
    }
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(f"usage: ridgeline-dev {{{'|'.join(commands)}}} ...", file=sys.stderr)
        return 2
    import importlib

    name = sys.argv.pop(1)
    sys.argv[0] = f"ridgeline-dev {name}"
    module = importlib.import_module(commands[name])
    return int(module.main())


if __name__ == "__main__":
    raise SystemExit(main())
