"""``ridgeline serve``: the core's CLI parses it and hands it here through the
``ridgeline.commands`` entry point, so the core never imports the serving app."""

from __future__ import annotations

import argparse
import sys

from ridgeline.api import InferenceModel
from ridgeline.planner import InfeasiblePlanError
from ridgeline_serving.local import LoadError, serve_forever


def serve_command(model: InferenceModel, args: argparse.Namespace) -> int:
    """Serve ``model`` until ^C; 2 when it cannot be planned here, 1 when it fails to load."""
    try:
        return serve_forever(model, args.host, args.port, args.metrics_port, args.model_uri)
    except InfeasiblePlanError as exc:
        print(
            f"ridgeline serve: {model.metadata.name}: infeasible on this machine: {exc}",
            file=sys.stderr,
        )
        return 2
    except LoadError as exc:
        print(f"ridgeline serve: {model.metadata.name}: {exc}", file=sys.stderr)
        return 1
