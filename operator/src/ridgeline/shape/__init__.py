"""A model's shape (layers, heads, parameter bytes) from config.json and safetensors headers."""

from ridgeline.shape.model_shape import ModelShape, ParamsSource, TensorRole

# The reader (``ridgeline.shape.reader``: read_model_shape, ShapeError) reads object stores, so
# it is an edge that the pure planner must not pull in through this package.
__all__ = ["ModelShape", "ParamsSource", "TensorRole"]
