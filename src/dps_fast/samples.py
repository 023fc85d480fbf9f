"""Synthetic images with known structure, for export validation, calibration and benchmarks.

Random trunks give tiny scores for mild noise, which hide errors; these pairs span small
(noise) and large (shift, blur, unrelated image) distances. NumPy only.
"""

from __future__ import annotations

import numpy as np


def natural_like(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A float32 (3, H, W) image in [0, 1]: gradients, a few shapes, and texture."""
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    img = np.empty((3, h, w), np.float32)
    for c in range(3):
        fx, fy = rng.uniform(0.5, 4.0, 2)
        ph = rng.uniform(0, 2 * np.pi)
        img[c] = 0.5 + 0.35 * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)
    for _ in range(4):
        cy, cx = rng.uniform(0, 1, 2)
        r = rng.uniform(0.05, 0.3)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img[:, mask] = rng.uniform(0, 1, (3, 1))
    img += rng.normal(0, 0.04, img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


def box_blur(img: np.ndarray, k: int = 5) -> np.ndarray:
    """Separable box blur of a (3, H, W) image (edge-padded)."""
    pad = k // 2
    x = np.pad(img, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    c = np.cumsum(np.pad(x, ((0, 0), (1, 0), (0, 0))), axis=1)
    x = (c[:, k:] - c[:, :-k]) / k
    c = np.cumsum(np.pad(x, ((0, 0), (0, 0), (1, 0))), axis=2)
    return ((c[:, :, k:] - c[:, :, :-k]) / k).astype(np.float32)


def distortion_pairs(n: int, h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs (float32 [n, 3, H, W] each) cycling noise, blur, shift and unrelated images."""
    rng = np.random.default_rng(seed)
    a = np.stack([natural_like(h, w, rng) for _ in range(n)])
    b = np.empty_like(a)
    for i in range(n):
        kind = i % 4
        if kind == 0:
            b[i] = np.clip(a[i] + rng.normal(0, 0.01, a[i].shape), 0, 1)
        elif kind == 1:
            b[i] = box_blur(a[i], 5)
        elif kind == 2:
            b[i] = np.roll(a[i], (max(1, h // 16), max(1, w // 16)), axis=(1, 2))
        else:
            b[i] = natural_like(h, w, rng)
    return a, b.astype(np.float32)
