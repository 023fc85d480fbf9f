"""Torch-free engine: ONNX Runtime sessions and NumPy distances. Never imports torch."""

from .engine import Engine, load

__all__ = ["Engine", "load"]
