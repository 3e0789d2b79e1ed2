"""The roofline planner: pure functions, no I/O beyond reading a pools file."""

from ridgeline.planner.plan import InfeasiblePlanError, gpu_counts, plan_model
from ridgeline.planner.pools import NodePool, PoolsFileError, load_pools, parse_pools

__all__ = [
    "InfeasiblePlanError",
    "NodePool",
    "PoolsFileError",
    "gpu_counts",
    "load_pools",
    "parse_pools",
    "plan_model",
]
