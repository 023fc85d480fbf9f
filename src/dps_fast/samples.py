"""Synthetic images with known structure, for export validation, calibration and benchmarks.

Random trunks give tiny scores for mild noise, which hide errors; these pairs span small
(noise) and large (shift, blur, unrelated image) distances. NumPy, and Pillow for JPEG.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def photo_like(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A uint8 (H, W, 3) image like an upscaled photograph: smooth regions and soft edges.

    :func:`natural_like` at 1/8 of the size, upscaled bicubically (Pillow), with mild grain.
    Near-identical distortions of such images are where long float32 reductions lose digits.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = natural_like(max(2, h // 8), max(2, w // 8), rng)
    u8 = (small.transpose(1, 2, 0) * 255).round().astype(np.uint8)
    big = np.asarray(Image.fromarray(u8).resize((w, h), Image.Resampling.BICUBIC), np.float32)
    big += rng.normal(0, 1.5, big.shape).astype(np.float32)
    return np.clip(big.round(), 0, 255).astype(np.uint8)


def jpeg_roundtrip(u8: np.ndarray, quality: int) -> np.ndarray:
    """``u8`` (H, W, 3) encoded as a JPEG of ``quality`` by Pillow and decoded again."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def photo_pairs(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three uint8 pairs [3, H, W, 3] of one photo-like image: tiny, medium and large distances.

    JPEG quality 55 (tiny: the case where float32 reductions used to fail), a 5×5 box blur
    (medium), and strong noise plus a shift (large).
    """
    a = photo_like(h, w, seed)
    rng = np.random.default_rng(seed + 1)
    blur = box_blur(a.transpose(2, 0, 1).astype(np.float32), 5).transpose(1, 2, 0)
    far = np.roll(a.astype(np.float32), (max(1, h // 16), max(1, w // 16)), axis=(0, 1))
    far += rng.normal(0, 40, far.shape).astype(np.float32)
    bs = [jpeg_roundtrip(a, 55), blur, far]
    b = np.stack([np.clip(np.round(x), 0, 255).astype(np.uint8) for x in bs])
    return np.stack([a, a, a]), b


def photo_features(
    taps: Sequence[tuple[int, int]], h: int, w: int, seed: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Tap-like float32 features [1, C, H/s, W/s] of a photo-like image and its JPEG q55 copy.

    ``taps``: (channels, stride) per tap. Each tap is a seeded channel mix of the pair's
    area-averaged pixels plus an offset, through a ReLU: near-identical maps with a large mean,
    the case where float32 reductions over many positions lose what a head needs. No trunk runs.
    """
    a = photo_like(h, w, seed)
    b = jpeg_roundtrip(a, 55)
    rng = np.random.default_rng(seed)
    fa: list[np.ndarray] = []
    fb: list[np.ndarray] = []
    for c, s in taps:
        hs, ws = max(1, h // s), max(1, w // s)
        mix = rng.normal(0, 1, (c, 3)).astype(np.float32)
        off = rng.uniform(0, 2, (c, 1, 1)).astype(np.float32)
        for img, out in ((a, fa), (b, fb)):
            sh, sw = h // hs, w // ws
            x = img[: hs * sh, : ws * sw].astype(np.float32) / 255
            x = x.reshape(hs, sh, ws, sw, 3).mean(axis=(1, 3))
            f = np.einsum("kc,hwc->khw", mix, x, dtype=np.float32) + off
            out.append(np.maximum(f, 0, out=f)[None])
    return fa, fb
