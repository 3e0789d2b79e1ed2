"""``ridgeline-node-cache`` / ``python -m ridgeline_serving.node_cache``: the node cache agent.

Configured by environment variables (``settings``): ``NODE_NAME`` and
``RIDGELINE_NODE_CACHE_NAMESPACE`` (required), ``RIDGELINE_NODE_CACHE_ROOT``
(/var/lib/ridgeline/weights), ``RIDGELINE_NODE_CACHE_BUDGET_BYTES`` (0: none),
``RIDGELINE_NODE_CACHE_GRACE_S`` (3600), ``RIDGELINE_NODE_CACHE_RESYNC_S`` (30),
``RIDGELINE_NODE_CACHE_METRICS_PORT`` (9450), ``RIDGELINE_NODE_CACHE_PARALLEL`` (8).
Flags: ``--once`` runs one pass and exits; ``-v`` logs at DEBUG. SIGTERM and SIGINT end it
after the step in progress (a fill is left to resume at the next start).

It needs: the node root mounted at the same path (hostPath), and RBAC to list
inferencemodels and get nodes (cluster-wide), get secrets in the models' namespaces, and
get/create/patch configmaps in its own namespace.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from types import FrameType

from ridgeline_serving.node_cache.settings import SettingsError, from_env

log = logging.getLogger("ridgeline.node_cache")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ridgeline-node-cache", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = from_env()
    except SettingsError as exc:
        print(f"ridgeline-node-cache: {exc}", file=sys.stderr)
        return 2
    # Replicas run as uid 1000 and read what the agent (root) writes: files 0644, dirs 0755.
    os.umask(0o022)
    from prometheus_client import start_http_server

    from ridgeline_serving.node_cache.agent import Agent
    from ridgeline_serving.node_cache.kube import KubeCluster, load_client
    from ridgeline_serving.node_cache.metrics import Metrics

    metrics = Metrics(settings.node)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, registry=metrics.registry)
    agent = Agent(settings, KubeCluster(load_client()), metrics)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping after the current step", signum)
        agent.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "node cache agent on %s: root %s, budget %d bytes, grace %.0f s, resync %.0f s",
        settings.node,
        settings.root,
        settings.budget_bytes,
        settings.grace_s,
        settings.resync_s,
    )
    if args.once:
        agent.run_pass()
    else:
        agent.run()
    if agent.filling is not None and agent.filling.thread.is_alive():
        # The download's worker threads would hold the exit until it ends; its parts are on
        # disk and recorded, so the next start resumes where it stopped.
        logging.shutdown()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
