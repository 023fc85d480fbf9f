"""Torch-side export: backbone trunks and distance heads to a validated ONNX model bundle."""

from .exporter import export_model

__all__ = ["export_model"]
