"""``ridgeline operator``: run the kopf operator.

Also runnable as ``kopf run --standalone -m ridgeline_operator.handlers``."""

from __future__ import annotations

import argparse
import logging
import os


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ridgeline operator")
    parser.add_argument("--config", help="operator config file (image catalog, node pools)")
    parser.add_argument("--namespace", action="append", help="watch only these namespaces")
    parser.add_argument("--metrics-port", type=int, default=8080)
    parser.add_argument("--health-port", type=int, default=8081)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.config:
        os.environ["RIDGELINE_CONFIG"] = args.config
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # kopf logs every handler call at INFO: with watches on nodes and a thousand models,
        # that is most of an idle operator's CPU. Errors and warnings still show.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    import kopf
    from prometheus_client import start_http_server

    import ridgeline_operator.handlers  # noqa: F401  (registers the handlers)

    start_http_server(args.metrics_port)
    kopf.run(
        standalone=True,  # no peering CRDs: one operator replica, as the chart deploys it
        clusterwide=not args.namespace,
        namespaces=args.namespace or [],
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz",
    )
    return 0
