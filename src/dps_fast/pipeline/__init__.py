"""Scoring many pairs: decode in threads overlapped with inference, reuse features, keep order.

``score_dirs`` and ``score_pairs`` yield one result record (a dict with the README's result
columns) per pair, in the pairing order whatever the worker count. A pair that cannot be scored
(bad file, size mismatch, too small) yields a record with ``error`` set; the run goes on.

One module per job: ``api`` (the run functions and the engines of a run), ``scorer`` (the
:class:`PairScorer` core), ``windows`` (CPU decode windows, shared images decoded once per
run), ``gpu`` (the GPU decode path), ``loader`` (one file → an array), ``features`` (feature
reuse), ``records`` (result rows, run counters), ``items`` (a pair's state).
"""

from .api import distance_matrix, model_list, one_engine, run_engines, score_dirs, score_pairs
from .features import DEFAULT_FEATURE_CACHE_BYTES, FeatureCache
from .gpu import DECODE_MODES, GPU_PREFETCH
from .items import Record
from .loader import ImageLoader
from .records import RunStats
from .scorer import PairScorer
from .windows import (
    DECODE_CACHE_BYTES,
    DEFAULT_WINDOW,
    DEFAULT_WINDOW_GPU,
    WINDOW_BYTES,
    default_workers,
)

__all__ = [
    "DECODE_CACHE_BYTES",
    "DECODE_MODES",
    "DEFAULT_FEATURE_CACHE_BYTES",
    "DEFAULT_WINDOW",
    "DEFAULT_WINDOW_GPU",
    "GPU_PREFETCH",
    "WINDOW_BYTES",
    "FeatureCache",
    "ImageLoader",
    "PairScorer",
    "Record",
    "RunStats",
    "default_workers",
    "distance_matrix",
    "model_list",
    "one_engine",
    "run_engines",
    "score_dirs",
    "score_pairs",
]
