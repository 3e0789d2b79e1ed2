"""``ridgeline``: plan, shape and render here; ``serve`` and ``operator`` live in the serving app
and the operator, found through the ``ridgeline.commands`` entry points (the core never imports
either package)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

import yaml

from ridgeline.api.plan import Plan
from ridgeline.config_files import load_pools
from ridgeline.manifest import ManifestError, load_inference_model
from ridgeline.planner import InfeasiblePlanError, PoolsFileError, plan_model
from ridgeline.planner.report import options_table, plan_text
from ridgeline.platform_config import ConfigError
from ridgeline.shape import ModelShape
from ridgeline.shape.config_estimate import estimate_reason
from ridgeline.shape.plan_ahead import read_or_estimate_model_shape
from ridgeline.shape.reader import ShapeError, read_model_shape
from ridgeline.storage import StorageError

# The entry-point group of the subcommands that live outside the core.
COMMANDS = "ridgeline.commands"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ridgeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    plan = sub.add_parser("plan", help="size a model.yaml for the given node pools")
    plan.add_argument("model", type=Path, help="InferenceModel manifest (model.yaml)")
    plan.add_argument("--pools", type=Path, required=True, help="POOLS.yaml: list of node pools")
    plan.add_argument("-o", "--output", choices=["text", "json", "yaml"], default="text")
    plan.add_argument("--plot", type=Path, help="write the roofline plot to this PNG")
    plan.add_argument(
        "--batch",
        type=_positive_int,
        metavar="N",
        help="also print the predicted step time and tokens/s of the planned replica at batch N",
    )
    plan.add_argument(
        "--model-uri", help="read the shape from this URI instead of spec.model.uri (a local copy)"
    )

    shape = sub.add_parser("shape", help="print a model's shape read from its config and headers")
    shape.add_argument("uri", help="model root: s3://, gs://, hf://, file:// or a local directory")

    render = sub.add_parser("render", help="print the RayService the operator would apply")
    render.add_argument("model", type=Path, help="InferenceModel manifest (model.yaml)")
    render.add_argument("--pools", type=Path, required=True, help="POOLS.yaml")
    render.add_argument("--config", type=Path, help="operator config (image catalog)")
    render.add_argument("--model-uri", help="read the shape from this URI instead")

    sub.add_parser("operator", help="run the Kubernetes operator (see: ridgeline operator -h)")

    serve = sub.add_parser("serve", help="serve a model.yaml locally on Ray (no cluster)")
    serve.add_argument("model", type=Path, help="InferenceModel manifest (model.yaml)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=8000)
    serve.add_argument("--metrics-port", type=_port, default=8080)
    serve.add_argument("--model-uri", help="serve from this URI instead of spec.model.uri")
    return parser


def _plan_shape(model_uri: str | None, spec_uri: str) -> ModelShape:
    """Planning ahead of a download: a root with config.json alone is sized from the config.
    Where spec.model.uri cannot be read, say how to plan from a local copy of the config."""
    try:
        return read_or_estimate_model_shape(model_uri or spec_uri)
    except (ShapeError, StorageError) as exc:
        if model_uri:
            raise
        raise ShapeError(
            f"{exc}\nhint: to plan without access to {spec_uri}, pass --model-uri DIR, a local "
            "directory with the model's config.json (its safetensors, if any, give the exact "
            "size); examples/models/ holds the examples' configs"
        ) from exc


def _with_estimate_reason(plan: Plan, shape: ModelShape) -> Plan:
    """The plan's reasons say when the weight bytes come from config.json, not the headers."""
    note = estimate_reason(shape)
    if note is None:
        return plan
    return plan.model_copy(update={"reasons": [*plan.reasons[:1], note, *plan.reasons[1:]]})


def _cmd_plan(args: argparse.Namespace) -> int:
    model = load_inference_model(args.model)
    pools = load_pools(args.pools)
    shape = _plan_shape(args.model_uri, model.spec.model.uri)
    name = model.metadata.name
    try:
        plan = _with_estimate_reason(plan_model(shape, model.spec, pools), shape)
    except InfeasiblePlanError as exc:
        print(f"ridgeline plan: {name}: infeasible: {exc}", file=sys.stderr)
        if note := estimate_reason(shape):
            print(note, file=sys.stderr)
        if exc.options:
            print("\nOptions considered:\n" + options_table(exc.options), file=sys.stderr)
        return 2
    if args.output == "json":
        print(json.dumps(plan.to_api(), indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(plan.to_api(), sort_keys=False), end="")
    else:
        print(plan_text(name, plan))
    pool = next(p for p in pools if p.name == plan.pool)
    if args.batch:
        from ridgeline.planner.at_batch import batch_text, predict_at_batch

        at = batch_text(predict_at_batch(shape, model.spec, plan, pool, args.batch), plan)
        # -o json and -o yaml stay exactly status.plan on stdout
        if args.output == "text":
            print(f"\n{at}")
        else:
            print(at, file=sys.stderr)
    if args.plot:
        from ridgeline.planner.plot import plot_plan

        try:
            image = plot_plan(
                _image_format(args.plot), name, shape, model.spec, plan, pool, args.batch
            )
            # Rendered in memory, then written here: savefig into a path loses a failed write
            # (the plot to /dev/full or onto a full disk reported success); a plain write raises.
            args.plot.write_bytes(image)
        except (OSError, ValueError) as exc:  # a missing directory, an unknown image format
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            print(
                f"ridgeline plan: cannot write the plot to {args.plot}: {reason}", file=sys.stderr
            )
            return 1
        print(f"roofline plot written to {args.plot}", file=sys.stderr)
    return 0


def _image_format(path: Path) -> str:
    """The image format savefig would infer from the file name; PNG where it names none."""
    return path.suffix[1:].lower() or "png"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a batch size (1 or more)")
    return value


def _port(text: str) -> int:
    # argparse's own error, not a traceback from Ray's proxy minutes later.
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (1 to 65535)")
    return value


def _cmd_shape(args: argparse.Namespace) -> int:
    shape = read_or_estimate_model_shape(args.uri)
    print(
        json.dumps(
            shape.model_dump(mode="json", by_alias=True, exclude={"linear_layers"}), indent=2
        )
    )
    return 0


def _command(name: str, extra: str) -> Callable[..., int] | None:
    """The ``ridgeline.commands`` entry point ``name`` (pyproject.toml), or None, saying which
    extra to install, where its package or libraries are missing."""
    found = next(iter(entry_points(group=COMMANDS, name=name)), None)
    if found is None:
        print(f"ridgeline {name}: no {COMMANDS} entry point; reinstall ridgeline", file=sys.stderr)
        return None
    try:
        command: Callable[..., int] = found.load()
    except ImportError as exc:
        print(
            f"ridgeline {name} needs the {extra} extra: pip install 'ridgeline[{extra}]' ({exc})",
            file=sys.stderr,
        )
        return None
    return command


def _cmd_serve(args: argparse.Namespace) -> int:
    serve = _command("serve", "serving")
    if serve is None:
        return 1
    return serve(load_inference_model(args.model), args)


def _cmd_render(args: argparse.Namespace) -> int:
    from ridgeline.compat import IncompatibleError, choose_image
    from ridgeline.config_files import load_platform_config
    from ridgeline.platform_config import default_config
    from ridgeline.render import build_rayservice
    from ridgeline.render.node_cache import build_volumes
    from ridgeline.render.pods import cache_bytes_estimate

    model = load_inference_model(args.model)
    config = load_platform_config(args.config) if args.config else default_config()
    pools = load_pools(args.pools)
    shape = read_model_shape(args.model_uri or model.spec.model.uri)
    try:
        plan = plan_model(shape, model.spec, pools)
        pool = next(p for p in pools if p.name == plan.pool)
        placement = choose_image(config, pool, model.spec.quantization)
    except (InfeasiblePlanError, IncompatibleError) as exc:
        print(f"ridgeline render: {model.metadata.name}: {exc}", file=sys.stderr)
        return 2
    manifest = build_rayservice(
        model, plan, placement, config, pool=pool, checkpoint_bytes=shape.checkpoint_bytes
    )
    print(yaml.dump(manifest, Dumper=_BlockDumper, sort_keys=False), end="")
    # With the node cache: the volume and claim the worker pods mount, as the operator makes them.
    cache_bytes = shape.checkpoint_bytes or cache_bytes_estimate(plan)
    for volume in build_volumes(model, config, cache_bytes, None):
        print("---")
        print(yaml.dump(volume, Dumper=_BlockDumper, sort_keys=False), end="")
    return 0


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (serveConfigV2) as literal blocks, as a person would write them."""


_BlockDumper.add_representer(
    str,
    lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style="|" if "\n" in v else None),
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["operator"]:  # its own flags: hand them over untouched
        operator = _command("operator", "operator")
        return 1 if operator is None else operator(argv[1:])
    args = _parser().parse_args(argv)
    handlers = {
        "plan": _cmd_plan,
        "shape": _cmd_shape,
        "serve": _cmd_serve,
        "render": _cmd_render,
    }
    try:
        return handlers[args.command](args)
    except BrokenPipeError:  # `ridgeline plan ... | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ManifestError, PoolsFileError, ShapeError, StorageError, ConfigError) as exc:
        print(f"ridgeline {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
