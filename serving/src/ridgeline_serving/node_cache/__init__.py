"""The node cache agent (issue 24): a DaemonSet pod per node that fills the node's weight cache
with the checkpoints of the models planned onto that node's pool, before a replica needs them.
Settings: ``settings`` (environment variables); run: ``ridgeline-node-cache`` or
``python -m ridgeline_serving.node_cache``."""
