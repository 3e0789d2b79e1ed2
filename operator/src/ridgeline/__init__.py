"""Ridgeline: size a model on the roofline and serve it on KubeRay."""

__version__ = "0.1.0"
