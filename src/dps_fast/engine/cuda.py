"""Moved to :mod:`dps_fast.cuda` (used by both the engine and the GPU decoder); this name stays
importable for existing code."""

from ..cuda import CudaArrayView, CudaRuntime, DeviceBatch, cuda_array_view, is_cuda_array, runtime

__all__ = [
    "CudaArrayView",
    "CudaRuntime",
    "DeviceBatch",
    "cuda_array_view",
    "is_cuda_array",
    "runtime",
]
