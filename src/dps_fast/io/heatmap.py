"""Distance maps saved as colour PNGs on a fixed scale, so maps of different pairs compare.

Scale: a value v maps to colour index round(255 * clip(v / vmax, 0, 1)) of a 256-entry
colormap that runs from black (0) through purple, red and orange to white (vmax and above).
The colormap is linear interpolation between a few anchor colours chosen so that brightness
rises steadily (a 'magma'-like ramp); NaN is drawn as 0.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["COLORMAP", "heatmap_name", "save_heatmap"]

# (position in [0, 1], RGB) anchors of the colormap; brightness increases monotonically.
_ANCHORS: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.00, (0, 0, 0)),
    (0.15, (28, 16, 68)),
    (0.35, (99, 27, 128)),
    (0.55, (183, 55, 121)),
    (0.75, (241, 105, 82)),
    (0.90, (253, 190, 120)),
    (1.00, (255, 255, 255)),
)


def _build_colormap() -> np.ndarray:
    """The 256×3 uint8 lookup table interpolated from the anchors."""
    positions = np.array([p for p, _ in _ANCHORS])
    colours = np.array([c for _, c in _ANCHORS], dtype=np.float64)
    x = np.linspace(0.0, 1.0, 256)
    table = np.stack([np.interp(x, positions, colours[:, k]) for k in range(3)], axis=1)
    lut = np.rint(table).astype(np.uint8)
    lut.setflags(write=False)
    return lut


COLORMAP: np.ndarray = _build_colormap()
"""256×3 uint8 colormap: index 0 is black, index 255 is white."""


def save_heatmap(m: np.ndarray, path: Path, *, vmax: float) -> None:
    """Save a float (H, W) map as an 8-bit RGB PNG: 0 is black, ``vmax`` and above white.

    Negative values and NaN are drawn as 0. Parent folders are created.
    """
    arr = np.asarray(m)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"save_heatmap: expected a 2-D (H, W) map, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"save_heatmap: expected a real-valued map, got dtype {arr.dtype}")
    vmax_f = float(vmax)
    if not math.isfinite(vmax_f) or vmax_f <= 0:
        raise ValueError(f"save_heatmap: expected a positive finite vmax, got {vmax!r}")
    scaled = np.nan_to_num(arr.astype(np.float64) / vmax_f, nan=0.0, posinf=1.0, neginf=0.0)
    index = np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
    rgb = COLORMAP[index]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(out, format="PNG")


_UNSAFE = re.compile(r'[\\:*?"<>|\x00-\x1f]')
_MAX_NAME_BYTES = 200


def _flat_stem(name: str) -> str:
    """A display path without extension, flattened to one file name ('/' -> '__')."""
    stem = os.path.splitext(name.replace("\\", "/"))[0].strip("/")
    return _UNSAFE.sub("_", stem.replace("/", "__")) or "_"


def heatmap_name(a: str, b: str) -> str:
    """A file-system-safe PNG name for a pair's map.

    ``sub/0001.png`` with ``sub/0001.jpg`` gives ``sub__0001.png``; when the stems differ,
    ``A--B.png``. Names too long for a file system are cut and given a short hash.
    """
    sa, sb = _flat_stem(a), _flat_stem(b)
    stem = sa if sa == sb else f"{sa}--{sb}"
    if len(stem.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES:
        digest = hashlib.sha1(f"{a}\0{b}".encode("utf-8", "surrogateescape")).hexdigest()[:12]
        cut = stem.encode("utf-8", "surrogateescape")[: _MAX_NAME_BYTES - 13]
        stem = cut.decode("utf-8", "ignore") + "-" + digest
    return stem + ".png"
