"""The roofline planner: pure functions, no I/O (``ridgeline.config_files`` reads a pools
file)."""

from ridgeline.planner.plan import InfeasiblePlanError, gpu_counts, plan_model
from ridgeline.planner.pools import NodePool, PoolsFileError, parse_pools

__all__ = [
    "InfeasiblePlanError",
    "NodePool",
    "PoolsFileError",
    "gpu_counts",
    "parse_pools",
    "plan_model",
]
