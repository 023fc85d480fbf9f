"""Pure NumPy distances on tap features: the reference, the CPU path and cached features.

Every function takes lists of K float32 arrays [N, C_k, h_k, w_k] for images a and b and
returns per-tap values [N, K] (or maps). They mirror the reference packages' numerics
(DESIGN.md, "Numerics").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LPIPS_EPS = 1e-10
DISTS_C1 = 1e-6
DISTS_C2 = 1e-6

Feats = Sequence[np.ndarray]


def unit_normalize(f: np.ndarray) -> np.ndarray:
    """``f / (sqrt(Σ_c f²) + 1e-10)`` over the channel axis (LPIPS' normalize_tensor)."""
    norm = np.sqrt(np.einsum("nchw,nchw->nhw", f, f, dtype=np.float32))[:, None]
    norm += np.float32(LPIPS_EPS)
    return f / norm


def _sq_diff(fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
    d = unit_normalize(fa)
    d -= unit_normalize(fb)
    np.square(d, out=d)
    return d


def lpips_tap_map(fa: np.ndarray, fb: np.ndarray, lin: np.ndarray | None) -> np.ndarray:
    """[N, h, w] map of one tap: lin-weighted (or plain) channel sum of squared differences."""
    d = _sq_diff(fa, fb)
    if lin is None:
        return d.sum(axis=1, dtype=np.float32)
    return np.einsum("nchw,c->nhw", d, lin.astype(np.float32, copy=False), dtype=np.float32)


def lpips_per_tap(fa: Feats, fb: Feats, lins: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """LPIPS per tap [N, K]; ``lins=None`` is the baseline (and DPS): channels summed."""
    cols = [
        lpips_tap_map(a, b, None if lins is None else lins[k]).mean(axis=(1, 2), dtype=np.float32)
        for k, (a, b) in enumerate(zip(fa, fb, strict=True))
    ]
    return np.stack(cols, axis=1).astype(np.float32, copy=False)


def _bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
    """[out, in] weights of PyTorch's bilinear resize with align_corners=False (no antialias)."""
    scale = in_size / out_size
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i0 = np.minimum(i0, in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    lam = (src - i0).astype(np.float32)
    m = np.zeros((out_size, in_size), np.float32)
    rows = np.arange(out_size)
    np.add.at(m, (rows, i0), 1.0 - lam)
    np.add.at(m, (rows, i1), lam)
    return m


def upsample_bilinear(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize maps [N, h, w] to [N, H, W] like ``F.interpolate(bilinear, align_corners=False)``."""
    h, w = m.shape[1:]
    mh = _bilinear_matrix(size[0], h)
    mw = _bilinear_matrix(size[1], w)
    return np.einsum("Hh,nhw,Ww->nHW", mh, m, mw, dtype=np.float32, optimize=True)


def lpips_spatial(
    fa: Feats, fb: Feats, size: tuple[int, int], lins: Sequence[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per tap [N, K] and the summed upsampled map [N, H, W] (LPIPS ``spatial=True``)."""
    total = None
    cols = []
    for k, (a, b) in enumerate(zip(fa, fb, strict=True)):
        m = lpips_tap_map(a, b, None if lins is None else lins[k])
        cols.append(m.mean(axis=(1, 2), dtype=np.float32))
        up = upsample_bilinear(m, size)
        total = up if total is None else total + up
    assert total is not None
    return np.stack(cols, axis=1), total


def dists_per_tap(fa: Feats, fb: Feats, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """DISTS per tap [N, K]: ``Σ_c α(1 − S1) + β(1 − S2)`` with α, β normalised to sum 1.

    Their sum over taps is ``1 − Σ(α·S1 + β·S2)``, the DISTS score.
    """
    alpha = alpha.reshape(-1).astype(np.float64)
    beta = beta.reshape(-1).astype(np.float64)
    total = alpha.sum() + beta.sum()
    alpha = (alpha / total).astype(np.float32)
    beta = (beta / total).astype(np.float32)
    cols = []
    off = 0
    for x, y in zip(fa, fb, strict=True):
        c = x.shape[1]
        a_k, b_k = alpha[off : off + c], beta[off : off + c]
        off += c
        mx = x.mean(axis=(2, 3), dtype=np.float32)
        my = y.mean(axis=(2, 3), dtype=np.float32)
        vx = np.square(x - mx[:, :, None, None]).mean(axis=(2, 3), dtype=np.float32)
        vy = np.square(y - my[:, :, None, None]).mean(axis=(2, 3), dtype=np.float32)
        cxy = (
            np.einsum("nchw,nchw->nc", x, y, dtype=np.float32) / np.float32(x.shape[2] * x.shape[3])
            - mx * my
        )
        s1 = (2 * mx * my + DISTS_C1) / (mx * mx + my * my + DISTS_C1)
        s2 = (2 * cxy + DISTS_C2) / (vx + vy + DISTS_C2)
        cols.append((a_k * (1 - s1) + b_k * (1 - s2)).sum(axis=1, dtype=np.float32))
    if off != alpha.size:
        raise ValueError(f"expected features with {alpha.size} channels in all, got {off}")
    return np.stack(cols, axis=1).astype(np.float32, copy=False)


def reduce_taps(per_tap: np.ndarray, how: str) -> np.ndarray:
    """Score from per-tap values: ``sum`` (LPIPS, DISTS) or ``mean`` (DPS)."""
    if how == "sum":
        return per_tap.sum(axis=1, dtype=np.float32)
    if how == "mean":
        return per_tap.mean(axis=1, dtype=np.float32)
    raise ValueError(f"expected reduce 'sum' or 'mean', got {how!r}")


def per_tap_distance(
    head: str,
    fa: Feats,
    fb: Feats,
    head_weights: dict[str, np.ndarray],
) -> np.ndarray:
    """Dispatch on the bundle's head kind: ``lpips``, ``lpips-baseline``, ``dps`` or ``dists``."""
    if head == "lpips":
        lins = [head_weights[f"lin{k}"] for k in range(len(fa))]
        return lpips_per_tap(fa, fb, lins)
    if head in ("lpips-baseline", "dps"):
        return lpips_per_tap(fa, fb, None)
    if head == "dists":
        return dists_per_tap(fa, fb, head_weights["alpha"], head_weights["beta"])
    raise ValueError(f"unknown head kind {head!r}; expected lpips, lpips-baseline, dps or dists")
