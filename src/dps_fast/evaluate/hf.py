"""High-frequency content of an image, on its luma Y = .299R + .587G + .114B (0–255).

- ``hfer``: share of the spectral energy of the (mean-removed, Hann-windowed) luma above a
  radial frequency ``cutoff`` (cycles per pixel; 0.5 is Nyquist); a constant image gives 0.
- ``spatial_information``: SI of ITU-T P.910, the std of the Sobel gradient magnitude
  (interior pixels).
- ``laplacian_variance``: variance of the 3×3 Laplacian (Pech-Pacheco et al., ICPR 2000),
  interior pixels.
"""

from __future__ import annotations

import numpy as np

from .deps import need

FEATURES = ("hfer", "si", "lapvar")


def luma(img: np.ndarray) -> np.ndarray:
    """Y of an (H, W, 3) RGB image (uint8 or float on a 0–255 scale), float64."""
    x = np.asarray(img, np.float64)
    if x.ndim == 2:
        return x
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def hfer(y: np.ndarray, cutoff: float = 0.25, window: bool = True) -> float:
    """Spectral energy above ``cutoff`` over all energy but DC (0 for a constant image)."""
    y = np.asarray(y, np.float64)
    y = y - y.mean()
    if window:
        y = y * np.outer(np.hanning(y.shape[0]), np.hanning(y.shape[1]))
    p = np.abs(np.fft.fft2(y)) ** 2
    r = np.hypot(
        *np.meshgrid(np.fft.fftfreq(y.shape[0]), np.fft.fftfreq(y.shape[1]), indexing="ij")
    )
    total = float(p[r > 0].sum())
    return float(p[r > cutoff].sum()) / total if total > 0 else 0.0


def spatial_information(y: np.ndarray) -> float:
    """ITU-T P.910 SI: std of the Sobel magnitude, interior pixels."""
    nd = need("scipy.ndimage")
    y = np.asarray(y, np.float64)
    mag = np.hypot(nd.sobel(y, axis=0), nd.sobel(y, axis=1))[1:-1, 1:-1]
    return float(mag.std())


def laplacian_variance(y: np.ndarray) -> float:
    """Variance of the 3×3 Laplacian, interior pixels."""
    lap = need("scipy.ndimage").laplace(np.asarray(y, np.float64))[1:-1, 1:-1]
    return float(lap.var())


def features(ref: np.ndarray, dist: np.ndarray, cutoff: float = 0.25) -> dict[str, float]:
    """HF features of the reference, of the residual (dist − ref), and ΔHFER (dist − ref)."""
    yr, yd = luma(ref), luma(dist)
    res = yd - yr
    out = {
        "ref_hfer": hfer(yr, cutoff),
        "ref_si": spatial_information(yr),
        "ref_lapvar": laplacian_variance(yr),
        "res_hfer": hfer(res, cutoff),
        "res_si": spatial_information(res),
        "res_lapvar": laplacian_variance(res),
    }
    out["delta_hfer"] = hfer(yd, cutoff) - out["ref_hfer"]
    return out
