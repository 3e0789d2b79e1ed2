"""The replica's own log lines (download progress, the start-up breakdown, engine warnings)
where an operator looks: a Ray worker configures no logging for other libraries, so INFO lines
of the ``ridgeline`` loggers would be dropped. With RAY_LOG_TO_STDERR (set by the operator's
pods) the worker's stderr is the container's, so these lines reach `kubectl logs`."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_replica_logging(level: int = logging.INFO) -> None:
    """Give the ``ridgeline`` loggers a stderr handler unless the process already logs
    somewhere (``ridgeline serve`` and tests configure their own)."""
    logger = logging.getLogger("ridgeline")
    if logger.hasHandlers():
        if logger.getEffectiveLevel() > level:
            logger.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)
