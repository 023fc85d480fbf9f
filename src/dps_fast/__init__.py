"""dps-fast: fast deep perceptual similarity (LPIPS, DISTS, DPS) on ONNX Runtime.

The engine needs only onnxruntime and NumPy; exporting bundles needs the ``[export]`` extra.
"""

import os as _os

# ONNX Runtime's telemetry is turned off (README, "What dps-fast guarantees"): the variable must
# be set before onnxruntime is imported, which opens a telemetry database under ~/.cache
# otherwise; import_ort() also calls its API switch. ORT_DISABLE_TELEMETRY=0 keeps it on.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from ._version import __version__
from .bundle import Bundle, read_bundle
from .cache import cache_root
from .engine import Engine
from .engine.reference import Reference
from .errors import (
    BundleError,
    BundleNotFoundError,
    DistributedError,
    DpsFastError,
    ImageDecodeError,
    InputError,
    InputTypeError,
    OutputValidationError,
    PairingError,
    ProviderError,
    UnknownModelError,
    WeightsError,
    WeightsNotFoundError,
)
from .hub import load
from .pipeline import distance_matrix, score_dirs, score_pairs
from .registry import ModelSpec, get_model, list_models
from .stream import score_iter

__all__ = [
    "Bundle",
    "BundleError",
    "BundleNotFoundError",
    "DistributedError",
    "DpsFastError",
    "Engine",
    "ImageDecodeError",
    "InputError",
    "InputTypeError",
    "ModelSpec",
    "OutputValidationError",
    "PairingError",
    "ProviderError",
    "Reference",
    "UnknownModelError",
    "WeightsError",
    "WeightsNotFoundError",
    "__version__",
    "cache_root",
    "distance_matrix",
    "get_model",
    "list_models",
    "load",
    "read_bundle",
    "score_dirs",
    "score_iter",
    "score_pairs",
]
