"""Confidence intervals: BCa bootstrap (``scipy.stats.bootstrap``), resampling clusters.

Items are resampled in clusters: each BAPPS triplet is its own cluster, MOS items cluster by
reference image (items of one reference are not independent). The statistic sees the items of
the resampled clusters; BCa's jackknife then leaves out one cluster at a time. A paired
bootstrap resamples the same clusters for two models and gives the CI of their difference.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from .deps import need

Statistic = Callable[[np.ndarray], np.ndarray]


def clusters(groups: Sequence[object]) -> list[np.ndarray]:
    """Item indices per cluster, clusters in order of first appearance."""
    index: dict[object, list[int]] = {}
    for i, g in enumerate(groups):
        index.setdefault(g, []).append(i)
    return [np.asarray(v, np.intp) for v in index.values()]


def bootstrap_ci(
    stat: Statistic,
    members: list[np.ndarray],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """BCa intervals of the values ``stat(item_indices)`` returns (k of them), over resampled
    clusters; NaN where one cannot be computed (fewer than 2 clusters, no resamples, a
    degenerate distribution)."""
    k = len(stat(np.concatenate(members))) if members else 0
    nan = np.full(k, math.nan)
    if n_resamples <= 0 or len(members) < 2:
        return nan, nan.copy()
    st = need("scipy.stats")

    def on_clusters(cl: np.ndarray) -> np.ndarray:
        idx = np.concatenate([members[int(c)] for c in cl])
        return np.asarray(stat(idx), np.float64)

    kw: dict[str, object] = {}
    seed_kw = "rng" if "rng" in inspect.signature(st.bootstrap).parameters else "random_state"
    kw[seed_kw] = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = st.bootstrap(
                (np.arange(len(members)),),
                on_clusters,
                vectorized=False,
                paired=False,
                n_resamples=n_resamples,
                confidence_level=confidence,
                method="BCa",
                **kw,
            )
        except (ValueError, FloatingPointError):
            return nan, nan.copy()
    lo = np.atleast_1d(np.asarray(res.confidence_interval.low, np.float64))
    hi = np.atleast_1d(np.asarray(res.confidence_interval.high, np.float64))
    return lo, hi
