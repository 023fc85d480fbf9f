"""Confidence intervals: BCa bootstrap (``scipy.stats.bootstrap``), resampling clusters.

Items are resampled in clusters: each BAPPS triplet is its own cluster, MOS items cluster by
reference image (items of one reference are not independent). The statistic sees the items of
the resampled clusters; BCa's jackknife then leaves out one cluster at a time. A paired
bootstrap resamples the same clusters for two models and gives the CI of their difference.

A statistic may come with a batch form (``batch``: the cluster indices of many resamples → one
row of values each); scipy then calls it once per batch (``vectorized``) with
the same random resamples and jackknife, so the intervals are the same numbers, only faster.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from .deps import need

Statistic = Callable[[np.ndarray], np.ndarray]
# cluster indices (B, m), one resample a row → (B, k) values, one row per resample
BatchStatistic = Callable[[np.ndarray], np.ndarray]
BATCH_ITEMS = 1_000_000  # items per call of a batch statistic (bounds what it gathers)


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
    batch: BatchStatistic | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """BCa intervals of the values ``stat(item_indices)`` returns (k of them), over resampled
    clusters; NaN where one cannot be computed (fewer than 2 clusters, no resamples, a
    degenerate distribution). ``batch``, if given, computes ``stat`` for many resamples at
    once (same values); the resamples and the jackknife are the same either way."""
    k = len(stat(np.concatenate(members))) if members else 0
    nan = np.full(k, math.nan)
    if n_resamples <= 0 or len(members) < 2:
        return nan, nan.copy()
    st = need("scipy.stats")

    def on_clusters(cl: np.ndarray) -> np.ndarray:
        idx = np.concatenate([members[int(c)] for c in cl])
        return np.asarray(stat(idx), np.float64)

    width = max(len(m) for m in members)

    def on_batch(cl: np.ndarray, axis: int = -1) -> np.ndarray:
        assert batch is not None
        c = np.moveaxis(np.asarray(cl), axis, -1)
        one = c.ndim == 1
        c = c.reshape(-1, c.shape[-1])
        step = max(1, BATCH_ITEMS // max(c.shape[1] * width, 1))
        parts = [np.asarray(batch(c[s : s + step]), np.float64) for s in range(0, len(c), step)]
        out = np.concatenate(parts).T  # (k, B), as scipy's own vectorising returns
        return out[:, 0] if one else out

    kw: dict[str, object] = {}
    seed_kw = "rng" if "rng" in inspect.signature(st.bootstrap).parameters else "random_state"
    kw[seed_kw] = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = st.bootstrap(
                (np.arange(len(members)),),
                on_clusters if batch is None else on_batch,
                vectorized=batch is not None,
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
