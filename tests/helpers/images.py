"""Builders for test images: plain content, odd colour modes, broken files, special entries.

Shared by the CLI tests (and open to the io tests). Everything is small and deterministic;
functions that write take the target path and return it.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112

# ---------------------------------------------------------------------------- content


def gradient(h: int, w: int, phase: float = 0.0) -> np.ndarray:
    """A smooth uint8 (h, w, 3) image without symmetry; survives JPEG well."""
    y, x = np.mgrid[0:h, 0:w]
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    b = 128 + 100 * np.sin(x / 7.0 + phase) * np.cos(y / 5.0 - phase)
    return np.stack([r, g, b], axis=-1).round().clip(0, 255).astype(np.uint8)


def noise(h: int, w: int, seed: int, channels: int = 3) -> np.ndarray:
    """Seeded uniform uint8 noise of shape (h, w, channels)."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)


def textured(h: int, w: int, seed: int) -> np.ndarray:
    """A gradient with mild seeded noise: distinct images per seed, still JPEG-friendly."""
    base = gradient(h, w, phase=seed * 0.7).astype(np.int16)
    jitter = np.random.default_rng(seed).integers(-20, 21, (h, w, 3), dtype=np.int16)
    return np.clip(base + jitter, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------- writers


def save_array(arr: np.ndarray, path: Path, **kwargs: Any) -> Path:
    """Save a uint8 array with Pillow (format from the suffix); creates parent folders."""
    return save_image(Image.fromarray(arr), path, **kwargs)


def save_image(im: Image.Image, path: Path, **kwargs: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kwargs)
    return path


def encoded(arr: np.ndarray, fmt: str, **kwargs: Any) -> bytes:
    """The bytes of ``arr`` encoded in ``fmt`` (PNG, JPEG, …)."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_rgb48(arr: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG of a uint16 (h, w, 3) array (Pillow cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


# ---------------------------------------------------------------------------- colour modes


def cmyk_jpeg(rgb: np.ndarray, path: Path) -> Path:
    """``rgb`` stored as a CMYK JPEG (Pillow's naive RGB→CMYK; quality 95)."""
    return save_image(Image.fromarray(rgb).convert("CMYK"), path, quality=95)


def grey16_png(grey16: np.ndarray, path: Path) -> Path:
    """A 16-bit greyscale PNG (Pillow mode I;16) of a uint16 (h, w) array."""
    im = Image.fromarray(grey16.astype(np.uint16))
    assert im.mode == "I;16", im.mode
    return save_image(im, path)


def palette_png(rgb: np.ndarray, path: Path, colours: int = 32) -> tuple[Path, np.ndarray]:
    """A palette (mode P) PNG of ``rgb`` quantised; returns the path and its RGB rendering."""
    pal = Image.fromarray(rgb).quantize(colours)
    save_image(pal, path)
    return path, np.asarray(pal.convert("RGB"))


def rotated_jpeg(upright: np.ndarray, path: Path) -> Path:
    """A JPEG whose stored pixels are ``upright`` turned 90° counter-clockwise, tagged with
    EXIF orientation 6 (rotate 90° clockwise to display), so a viewer shows ``upright``."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    stored = np.ascontiguousarray(np.rot90(upright, k=1))
    return save_image(Image.fromarray(stored), path, quality=95, exif=exif.tobytes())


# sRGB colorants adapted to D50, as ICC matrix/TRC profiles store them.
SRGB_RED = (0.4361, 0.2225, 0.0139)
SRGB_GREEN = (0.3851, 0.7169, 0.0971)
SRGB_BLUE = (0.1431, 0.0606, 0.7141)
D50 = (0.9642, 1.0, 0.8249)


def icc_rgb_profile(
    red: tuple[float, float, float],
    green: tuple[float, float, float],
    blue: tuple[float, float, float],
    description: str,
) -> bytes:
    """A minimal ICC v2 RGB display profile (matrix + gamma 2.2 curves), byte by byte."""

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(v: tuple[float, float, float]) -> bytes:
        return b"XYZ " + b"\0" * 4 + b"".join(s15(c) for c in v)

    text = description.encode("ascii") + b"\0"
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text + b"\0" * (8 + 3 + 67)
    curve = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, 0x0233) + b"\0\0"
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz(D50)),
        (b"rXYZ", xyz(red)),
        (b"gXYZ", xyz(green)),
        (b"bXYZ", xyz(blue)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table = struct.pack(">I", len(tags))
    body = b""
    for sig, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    header = (
        struct.pack(">I", offset + len(body))
        + b"\0" * 4
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 28
        + b"".join(s15(c) for c in D50)
    )
    header += b"\0" * (128 - len(header))
    return header + table + body


SWAPPED_RG_PROFILE = icc_rgb_profile(SRGB_GREEN, SRGB_RED, SRGB_BLUE, "red and green swapped")
"""A profile whose red and green primaries are sRGB's green and red: stored (r, g, b) is shown
roughly as sRGB (g, r, b)."""


def swapped_icc_png(rgb: np.ndarray, path: Path) -> Path:
    """A PNG that displays as ``rgb`` (approximately): pixels with red and green swapped,
    tagged with :data:`SWAPPED_RG_PROFILE`. Without colour management it looks wrong."""
    stored = np.ascontiguousarray(rgb[..., [1, 0, 2]])
    return save_image(Image.fromarray(stored), path, icc_profile=SWAPPED_RG_PROFILE)


# ---------------------------------------------------------------------------- broken entries


def truncated_png(arr: np.ndarray, path: Path) -> Path:
    """A PNG cut in half (valid header, missing data)."""
    data = encoded(arr, "PNG")
    path.write_bytes(data[: len(data) // 2])
    return path


def empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def text_file(path: Path) -> Path:
    """A text file (named like an image by the caller)."""
    path.write_text("this is a text file, not an image\n", encoding="utf-8")
    return path


def broken_symlink(path: Path) -> Path:
    path.symlink_to(path.with_name(path.name + ".missing-target"))
    return path


def directory(path: Path) -> Path:
    path.mkdir()
    return path


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def flat_png(h: int, w: int, path: Path, value: int = 90) -> Path:
    """A large but tiny-on-disk image (one colour with a gradient stripe)."""
    arr = np.full((h, w, 3), value, np.uint8)
    arr[: min(h, 16)] = gradient(min(h, 16), w)
    return save_array(arr, path)
