"""Agreement with people, computed as the field computes it, and signed (never ``abs``).

- 2AFC as in the LPIPS code: per triplet ``1 − j`` if d0 < d1, ``j`` if d1 < d0, ½ on a tie
  (``j`` is the fraction of raters who chose p1); the human ceiling is mean(max(j, 1 − j)).
- JND mAP: pairs stably sorted by distance, "same" as positives, VOC all-point AP.
- MOS: quality q (= −distance) against the rating t (MOS, or −DMOS): SROCC, KROCC (τ-b),
  PLCC raw and after a fitted logistic (4-parameter as pyiqa, 5-parameter as VQEG), RMSE after
  the fit, outlier ratio (ITU-T P.1401: |t − f(q)| > k·σᵢ, σᵢ the item's rating spread).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .deps import need

FITS = ("logistic4", "logistic5", "none")
MAXFEV = 10000  # as pyiqa


def two_afc_per_item(d0: np.ndarray, d1: np.ndarray, judge: np.ndarray) -> np.ndarray:
    """Per-triplet 2AFC credit: agreement with the raters' fraction (distances: lower = closer)."""
    d0, d1, j = (np.asarray(x, np.float64) for x in (d0, d1, judge))
    return np.where(d0 < d1, 1.0 - j, np.where(d1 < d0, j, 0.5))


def two_afc(d0: np.ndarray, d1: np.ndarray, judge: np.ndarray) -> float:
    """2AFC score: mean per-triplet credit."""
    return float(np.mean(two_afc_per_item(d0, d1, judge)))


def human_ceiling(judge: np.ndarray) -> float:
    """The best 2AFC any measure can reach on these triplets: mean(max(j, 1 − j))."""
    j = np.asarray(judge, np.float64)
    return float(np.mean(np.maximum(j, 1.0 - j)))


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point average precision: area under the precision envelope."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def jnd_map(d: np.ndarray, same: np.ndarray) -> float:
    """JND mAP: "same" judgments retrieved by ascending distance (stable sort), VOC AP."""
    order = np.argsort(np.asarray(d, np.float64), kind="stable")
    s = np.asarray(same, np.float64)[order]
    tp, fp = np.cumsum(s), np.cumsum(1.0 - s)
    total = tp[-1] if tp.size else 0.0
    if total <= 0:
        return math.nan
    return voc_ap(tp / total, tp / np.maximum(tp + fp, np.finfo(np.float64).tiny))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r by NumPy (NaN for constant input): the bootstrap calls this thousands of
    times, where scipy's per-call checks cost more than the sums."""
    x = np.asarray(x, np.float64) - np.mean(x)
    y = np.asarray(y, np.float64) - np.mean(y)
    den = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / den if den > 0 else math.nan


def srocc(q: np.ndarray, t: np.ndarray) -> float:
    """Spearman's ρ: Pearson's r of the average ranks (scipy's ``rankdata``), as ``spearmanr``."""
    rank = need("scipy.stats").rankdata
    return _pearson(rank(q), rank(t))


def krocc(q: np.ndarray, t: np.ndarray) -> float:
    """Kendall's τ-b (ties corrected), as scipy computes it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(need("scipy.stats").kendalltau(q, t, variant="b").statistic)


def plcc(q: np.ndarray, t: np.ndarray) -> float:
    """Pearson's r (NaN for constant input)."""
    return _pearson(q, t)


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """pyiqa's 4-parameter logistic: (β1 − β2) / (1 + exp(−(x − β3)/|β4|)) + β2."""
    z = np.clip(-(x - b3) / max(abs(b4), 1e-300), -500, 500)
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


def _logistic4_jac(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """∂ logistic4 / ∂β (n, 4), exact: MINPACK then needs no finite differences."""
    a = max(abs(b4), 1e-300)
    s = 1.0 / (1.0 + np.exp(np.clip(-(x - b3) / a, -500, 500)))
    g = (b1 - b2) * s * (1.0 - s)  # ∂f/∂(−z)
    return np.stack([s, 1.0 - s, -g / a, -g * np.sign(b4) * (x - b3) / a**2], axis=1)


def logistic5(x: np.ndarray, b1: float, b2: float, b3: float, b4: float, b5: float) -> np.ndarray:
    """VQEG / Sheikh et al. 5-parameter logistic: β1(½ − 1/(1 + e^{β2(x − β3)})) + β4·x + β5."""
    z = np.clip(b2 * (x - b3), -500, 500)
    return b1 * (0.5 - 1.0 / (1.0 + np.exp(z))) + b4 * x + b5


def _logistic5_jac(
    x: np.ndarray, b1: float, b2: float, b3: float, b4: float, b5: float
) -> np.ndarray:
    """∂ logistic5 / ∂β (n, 5), exact."""
    u = 1.0 / (1.0 + np.exp(np.clip(b2 * (x - b3), -500, 500)))
    g = b1 * u * (1.0 - u)
    return np.stack([0.5 - u, g * (x - b3), -g * b2, x, np.ones_like(x)], axis=1)


@dataclass
class Fit:
    """A fitted mapping q → t; ``status`` is ``ok``, ``none`` or why the fit failed."""

    kind: str
    params: list[float] = field(default_factory=list)
    status: str = "ok"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def __call__(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, np.float64)
        if self.kind == "none" or not self.ok:
            return q if self.kind == "none" else np.full_like(q, np.nan)
        f = logistic4 if self.kind == "logistic4" else logistic5
        return f(q, *self.params)


def fit_logistic(
    q: np.ndarray,
    t: np.ndarray,
    kind: str = "logistic4",
    *,
    p0: list[float] | None = None,
    maxfev: int = MAXFEV,
) -> Fit:
    """Least-squares fit of ``kind`` (scipy ``curve_fit``); a failed fit is reported, not hidden.

    ``p0`` overrides the starting point (bootstrap resamples start from the full data's fit).
    """
    if kind not in FITS:
        raise ValueError(f"expected fit one of {', '.join(FITS)}, got {kind!r}")
    if kind == "none":
        return Fit("none", status="none")
    opt = need("scipy.optimize")
    q, t = np.asarray(q, np.float64), np.asarray(t, np.float64)
    sq = float(np.std(q))
    if not sq > 0 or len(q) < (4 if kind == "logistic4" else 5):
        return Fit(kind, status=f"failed: {len(q)} items, score std {sq:.3g}: nothing to fit")
    if kind == "logistic4":
        f: Any = logistic4
        jac: Any = _logistic4_jac
        start = [float(t.max()), float(t.min()), float(q.mean()), sq / 4]
    else:
        f, jac = logistic5, _logistic5_jac
        start = [float(t.max() - t.min()), 4.0 / sq, float(q.mean()), 0.0, float(t.mean())]
    try:
        with warnings.catch_warnings():
            # "covariance could not be estimated" (exact data) is no failure of the fit itself
            warnings.simplefilter("ignore", opt.OptimizeWarning)
            # Levenberg–Marquardt (MINPACK) as pyiqa, with the exact Jacobian: finite
            # differences with a step ε·|β| stall when a parameter starts near 0 (β3 = mean q).
            params, _ = opt.curve_fit(
                f, q, t, p0=start if p0 is None else p0, jac=jac, method="lm", maxfev=maxfev
            )
    except (RuntimeError, ValueError) as e:
        return Fit(kind, status=f"failed: {' '.join(str(e).split())[:120]}")
    if not np.all(np.isfinite(params)):
        return Fit(kind, status="failed: non-finite parameters")
    return Fit(kind, [float(p) for p in params])


def refit(q: np.ndarray, t: np.ndarray, start: Fit, maxfev: int = 100) -> Fit:
    """``start``'s curve refitted to (q, t) from ``start``'s parameters, for bootstrap resamples:
    Levenberg–Marquardt (scipy ``leastsq``) stopped after ``maxfev`` evaluations is kept as the
    resample's fit (near-step data keeps creeping towards a step; the values barely move)."""
    if not start.ok or start.kind == "none":
        return fit_logistic(q, t, start.kind)
    opt = need("scipy.optimize")
    f, jac = (
        (logistic4, _logistic4_jac) if start.kind == "logistic4" else (logistic5, _logistic5_jac)
    )
    q, t = np.asarray(q, np.float64), np.asarray(t, np.float64)
    if len(q) < len(start.params) or not np.std(q) > 0:
        return Fit(start.kind, status=f"failed: {len(q)} items: nothing to fit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params, _ = opt.leastsq(
            lambda b: f(q, *b) - t,
            np.asarray(start.params),
            Dfun=lambda b: jac(q, *b),
            maxfev=maxfev,
        )
    if not np.all(np.isfinite(params)):
        return Fit(start.kind, status="failed: non-finite parameters")
    return Fit(start.kind, [float(p) for p in params])


def rmse(t: np.ndarray, fitted: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(t) - np.asarray(fitted)) ** 2)))


def outliers(
    t: np.ndarray, fitted: np.ndarray, std: np.ndarray | None, k: float = 2.0
) -> tuple[np.ndarray, str]:
    """Outlier flags per item (ITU-T P.1401): |t − f(q)| > k·σᵢ with σᵢ the item's rating
    spread; without one (any σᵢ missing), k times the std of the residuals, and says so."""
    res = np.asarray(t, np.float64) - np.asarray(fitted, np.float64)
    if std is not None and len(std) and np.all(np.isfinite(std)):
        return np.abs(res) > k * np.asarray(std, np.float64), "item rating spread"
    return np.abs(res) > k * float(np.std(res)), "no per-item spread: residual std"
