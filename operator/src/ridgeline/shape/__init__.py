"""A model's shape (layers, heads, parameter bytes) from config.json and safetensors headers."""

from ridgeline.shape.model_shape import ModelShape, ParamsSource, TensorRole
from ridgeline.shape.reader import ShapeError, read_model_shape

__all__ = ["ModelShape", "ParamsSource", "ShapeError", "TensorRole", "read_model_shape"]
