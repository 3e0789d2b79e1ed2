"""Pure builders of the Kubernetes objects Ridgeline applies."""

from ridgeline.render.rayservice import build_rayservice, serving_args_for, spec_hash

__all__ = ["build_rayservice", "serving_args_for", "spec_hash"]
