"""Torch-free engine: ONNX Runtime sessions and NumPy distances. Never imports torch."""

from .engine import Engine, set_bundle_resolver

__all__ = ["Engine", "set_bundle_resolver"]
