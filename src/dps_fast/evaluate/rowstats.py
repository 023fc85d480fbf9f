"""Rank and raw correlations of many bootstrap resamples of clusters at once.

The bootstrap evaluates SROCC, KROCC (τ-b) and PLCC on a thousand resamples per summary row;
scipy per resample spends most of its time on per-call checks. A batch of resamples is a
matrix of cluster indices (B, m), one row per resample:

- SROCC and PLCC gather each row's items (clusters of unequal size padded and masked); ranks
  come from one ``rankdata(axis=1)`` call with the padding above every value, so the valid
  entries' average ranks are those of the resample alone; Pearson's r is a masked row sum.
- Kendall's τ-b needs no gathering: a resample holds cluster c w_c times, so its signed pair
  count is ½·wᵀKw with K[c, c′] the sum of sign(Δx)·sign(Δy) over item pairs of clusters c
  and c′ (pairs within one copy, between copies and across clusters all fall out of the one
  quadratic form), and likewise its untied pair counts; K is computed once per row. The
  counts are integers, exact in float64, so τ-b is scipy's to rounding.
"""

from __future__ import annotations

import math

import numpy as np

from .deps import need

PAIR_BLOCK = 2_000_000  # item pairs per block when building the cluster pair matrices


class Clusters:
    """Cluster members as a padded matrix, to gather resamples' items and count clusters."""

    def __init__(self, members: list[np.ndarray], n_items: int) -> None:
        width = max(len(m) for m in members)
        self.padded = np.full((len(members), width), -1, np.intp)
        for r, m in enumerate(members):
            self.padded[r, : len(m)] = m
        self.of_item = np.full(n_items, -1, np.intp)
        for r, m in enumerate(members):
            self.of_item[m] = r

    @property
    def n(self) -> int:
        return len(self.padded)

    def items(self, cl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, L) item indices of each resample (clusters in its order) and their validity."""
        idx = self.padded[cl].reshape(len(cl), -1)
        return np.maximum(idx, 0), idx >= 0

    def counts(self, cl: np.ndarray) -> np.ndarray:
        """(B, clusters) how often each resample holds each cluster."""
        b = len(cl)
        flat = (cl + self.n * np.arange(b)[:, None]).ravel()
        return np.bincount(flat, minlength=b * self.n).reshape(b, self.n).astype(np.float64)


def ranks(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Average ranks along axis 1 of the valid entries; padding ranks above them all."""
    rank = need("scipy.stats").rankdata
    return np.asarray(rank(np.where(mask, x, np.inf), axis=1), np.float64)


def pearson(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pearson's r per row over the valid entries (NaN for a constant row)."""
    w = mask.astype(np.float64)
    n = w.sum(axis=1, keepdims=True)
    x, y = np.where(mask, x, 0.0), np.where(mask, y, 0.0)
    xc = (x - x.sum(1, keepdims=True) / n) * w
    yc = (y - y.sum(1, keepdims=True) / n) * w
    den = np.sqrt(np.einsum("ij,ij->i", xc, xc) * np.einsum("ij,ij->i", yc, yc))
    num = np.einsum("ij,ij->i", xc, yc)
    ok = den > 0
    return np.where(ok, num / np.where(ok, den, 1.0), math.nan)


class KendallPairs:
    """Per cluster pair: Σ sign(Δx)·sign(Δy), Σ |sign(Δx)|, Σ |sign(Δy)| over item pairs."""

    def __init__(self, x: np.ndarray, y: np.ndarray, cl: Clusters) -> None:
        # items ordered by cluster, so each cluster's pairs are one run to add up (reduceat)
        keep = np.flatnonzero(cl.of_item >= 0)
        order = keep[np.argsort(cl.of_item[keep], kind="stable")]
        x, y, lab = x[order], y[order], cl.of_item[order]
        starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
        n, k = len(x), len(starts)
        by_row = [np.zeros((n, k)) for _ in range(3)]
        step = max(1, PAIR_BLOCK // max(n, 1))
        for s in range(0, n, step):
            e = min(n, s + step)
            sx = np.sign(x[s:e, None] - x[None, :])
            sy = np.sign(y[s:e, None] - y[None, :])
            for m, v in zip(by_row, (sx * sy, np.abs(sx), np.abs(sy)), strict=True):
                m[s:e] = np.add.reduceat(v, starts, axis=1)
        self.k, self.ax, self.ay = (np.add.reduceat(m, starts, axis=0) for m in by_row)

    def tau_b(self, w: np.ndarray) -> np.ndarray:
        """τ-b of each resample with cluster counts ``w`` (B, clusters), as scipy: NaN when
        one side is all ties, clipped to [−1, 1]."""
        s = 0.5 * np.einsum("bi,ij,bj->b", w, self.k, w)
        nx = 0.5 * np.einsum("bi,ij,bj->b", w, self.ax, w)
        ny = 0.5 * np.einsum("bi,ij,bj->b", w, self.ay, w)
        ok = (nx > 0) & (ny > 0)
        tau = s / np.sqrt(np.where(ok, nx, 1.0)) / np.sqrt(np.where(ok, ny, 1.0))
        return np.where(ok, np.clip(tau, -1.0, 1.0), math.nan)


def spearman(q: np.ndarray, t: np.ndarray, cl: Clusters, rows: np.ndarray) -> np.ndarray:
    """(B,): SROCC of quality ``q`` vs rating ``t`` on each resample (cluster rows)."""
    idx, mask = cl.items(rows)
    return pearson(ranks(q[idx], mask), ranks(t[idx], mask), mask)


class MosCorrelations:
    """SROCC, KROCC, PLCC of quality ``q`` vs rating ``t`` for resamples of ``members``."""

    def __init__(self, q: np.ndarray, t: np.ndarray, members: list[np.ndarray]) -> None:
        self.q, self.t = q, t
        self.cl = Clusters(members, len(q))
        self._kendall: KendallPairs | None = None

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """(B, 3) for cluster index rows (B, m)."""
        if self._kendall is None:  # built on first use: the point values don't need it
            self._kendall = KendallPairs(self.q, self.t, self.cl)
        idx, mask = self.cl.items(rows)
        qv, tv = self.q[idx], self.t[idx]
        sr = pearson(ranks(qv, mask), ranks(tv, mask), mask)
        kr = self._kendall.tau_b(self.cl.counts(rows))
        return np.stack([sr, kr, pearson(qv, tv, mask)], axis=1)
